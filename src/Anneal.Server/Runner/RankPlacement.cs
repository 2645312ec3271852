// How many trainer ranks a job runs as, and on what: [compute].gpu_count (metadata.effective_config.compute)
// against this server's GPUs (--gpus); [compute].nodes > 1 (several hosts) is refused. One rank per GPU, launched together by mpirun
// (Anneal.Core.Training.RankLaunch), each seeing all of the job's GPUs and using the one of its local rank.
//   gpu_count ≤ 1 ...................... one trainer process, as always;
//   GPUs configured, gpu_count ≤ their number: gpu_count ranks, once that many GPUs are free (the
//                                        job waits at the head of the queue until then);
//   GPUs configured, gpu_count > their number: refused, naming both numbers;
//   no GPUs, CPU ranks allowed (--cpu-ranks; tests, development): gpu_count CPU ranks;
//   no GPUs otherwise .................. one CPU process, with the warning that names the difference.
using System.Globalization;
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Server.Jobs;

namespace Anneal.Server.Runner;

/// <summary>A job's ranks; <see cref="Refusal"/> says why it cannot run here.</summary>
public sealed record Placement(int Requested, int Ranks, bool OnGpus, string? Refusal);

public static class RankPlacement
{
    /// <summary>The job's [compute].gpu_count (1 when absent or not a positive number): all of its ranks run on this host.</summary>
    public static int RequestedGpus(JobRow job)
    {
        if (job.Wire.Metadata?["effective_config"]?["compute"] is not JsonObject compute) return 1;
        return compute["gpu_count"] is JsonValue v && (v.TryGetValue<int>(out var i)
            || (v.TryGetValue<string>(out var s) && int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out i))) && i > 0 ? i : 1;
    }

    /// <summary>
    /// Why a job asking for several hosts ([compute].nodes > 1) cannot run; null otherwise. Job
    /// creation refuses such jobs (JobSettings.Normalize); this covers one stored before that.
    /// </summary>
    public static string? NodesRefusal(JobRow job) =>
        JobSettings.Nodes(job.Wire.Metadata?["effective_config"]?["compute"] as JsonObject) is > 1 and var nodes
            ? "[compute] nodes " + JobSettings.NodesUnsupported(nodes) : null;

    /// <summary>GPUs the job takes from the server's free GPUs when it starts (0 when it will be refused).</summary>
    public static int GpusToTake(int requested, ServerOptions options) =>
        options.Gpus.Count == 0 ? 0 : requested <= options.Gpus.Count ? Math.Max(1, requested) : 0;

    public static Placement Decide(int requested, ServerOptions options, bool mpirunFound)
    {
        requested = Math.Max(1, requested);
        if (options.Gpus.Count > 0)
        {
            if (requested > options.Gpus.Count)
                return new Placement(requested, 0, true,
                    $"[compute] asks for {requested} GPUs; this server trains on {options.Gpus.Count} (--gpus {string.Join(',', options.Gpus)}): " +
                    $"set gpu_count to at most {options.Gpus.Count} or run the job on a larger machine");
            return Checked(new Placement(requested, requested, true, null), mpirunFound);
        }
        return options.CpuRanks && requested > 1
            ? Checked(new Placement(requested, requested, false, null), mpirunFound)
            : new Placement(requested, 1, false, null);
    }

    static Placement Checked(Placement p, bool mpirunFound) =>
        p.Ranks > 1 && !mpirunFound
            ? p with { Refusal = $"[compute] asks for {p.Requested} ranks, which this server launches with Open MPI's mpirun, and mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)" }
            : p;

    /// <summary>Whether mpirun is on PATH.</summary>
    public static bool MpirunFound() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Any(d => File.Exists(Path.Combine(d, "mpirun")));
}
