// Runs the trainer as N CPU ranks under Open MPI's mpirun, the way the runner launches a multi-rank
// job: this test assembly is the trainer executable (TrainerEntryPoint). Tests marked [MpiFact] /
// [MpiTheory] are skipped, saying why, only where mpirun is missing (./test.sh installs Open MPI).
using System.Diagnostics;
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training.Tests.Distributed;

public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute() { if (!MpiRanks.Available) Skip = MpiRanks.Missing; }
}

public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute() { if (!MpiRanks.Available) Skip = MpiRanks.Missing; }
}

public static class MpiRanks
{
    public const string Missing = "mpirun is not installed: the multi-rank tests need Open MPI (apt-get install openmpi-bin libopenmpi-dev; ./test.sh does it)";
    public static bool Available { get; } = File.Exists("/usr/bin/mpirun") || (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, "mpirun")));

    public sealed record Result(int Exit, List<TrainerEvent> Events, string Stderr, TimeSpan Elapsed);

    /// <summary>Starts <paramref name="ranks"/> trainer ranks on <paramref name="spec"/>; the process is mpirun.</summary>
    public static Process Start(int ranks, TrainerJobSpec spec, IReadOnlyDictionary<string, string>? environment = null)
    {
        Directory.CreateDirectory(spec.OutputDir);
        var specPath = Path.Combine(Path.GetDirectoryName(spec.OutputDir)!, $"spec-{Guid.NewGuid():N}.json");
        File.WriteAllText(specPath, JsonSerializer.Serialize(spec, AnnealJson.Options));
        var prefix = RankLaunch.MpirunPrefix(ranks, Environment.UserName == "root");
        var psi = new ProcessStartInfo(prefix[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix.Skip(1).Concat(TrainerEntryPoint.Command()).Concat(["trainer", "run", "--spec", specPath])) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    /// <summary>Runs to the end (killing the whole tree after <paramref name="timeout"/>) and parses rank 0's events.</summary>
    public static Result Run(int ranks, TrainerJobSpec spec, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var clock = Stopwatch.StartNew();
        using var p = Start(ranks, spec, environment);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout ?? TimeSpan.FromSeconds(180)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{ranks} ranks did not finish in time:\n{stderr.Result}");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, ParseEvents(stdout.Result), stderr.Result, clock.Elapsed);
    }

    public static List<TrainerEvent> ParseEvents(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.StartsWith('{'))
            .Select(l => JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
}
