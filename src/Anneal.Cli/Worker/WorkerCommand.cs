// `anneal worker --server URL --token T [--gpus 0,1 --gpu-type H100] [--work-dir DIR] [--models-dir DIR]`: runs a
// server's jobs on this host (WorkerAgent). The server must be started with the same token
// (`anneal serve --worker-token`, or ANNEAL_WORKER_TOKEN on both sides).
// `anneal worker list [--json]`: the workers registered with the server (an admin API key).
using System.CommandLine;
using Anneal.Cli.Http;

namespace Anneal.Cli.Worker;

public static class WorkerCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        // Checked in the action rather than by the parser, which would ask for it after `worker list` too.
        var server = new Option<string?>("--server") { Description = "The Anneal server's address, e.g. http://10.0.0.5:8000 (required)" };
        var token = new Option<string?>("--token")
        {
            Description = "The server's worker token (default: ANNEAL_WORKER_TOKEN)",
            DefaultValueFactory = _ => ctx.Environment.TryGetValue("ANNEAL_WORKER_TOKEN", out var t) && t.Length > 0 ? t : null,
        };
        var gpus = new Option<string?>("--gpus") { HelpName = "0,1,...", Description = "GPU indices: a job takes as many as its [compute].gpu_count asks (one rank each, under mpirun), one job per GPU otherwise (default: one job at a time on the CPU)" };
        var cpuRanks = new Option<bool>("--cpu-ranks") { Description = "Without --gpus, run a job's [compute].gpu_count > 1 as that many CPU ranks under mpirun (development and tests)" };
        var gpuType = new Option<string?>("--gpu-type") { HelpName = "TYPE", Description = "The GPUs' type, e.g. H100: jobs whose [compute] names another type are left to other workers" };
        var workDir = new Option<string?>("--work-dir") { Description = "Datasets cache, job folders and models (default: ~/.anneal-worker)" };
        var modelsDir = new Option<string?>("--models-dir") { Description = "Folder of local Hugging Face model folders, searched first (default: <work-dir>/models)" };
        var offline = new Option<bool>("--offline") { Description = "Never download base models from the Hugging Face Hub" };
        var name = new Option<string?>("--name") { Description = "How the server names this worker in job events (default: the host name)" };
        var exitWhenIdle = new Option<bool>("--exit-when-idle") { Description = "Stop once no job is queued (default: wait for jobs until Ctrl+C)" };
        var command = new Command("worker", "Run a server's training jobs on this host's GPUs (or CPU) until Ctrl+C")
        {
            server, token, gpus, gpuType, workDir, modelsDir, offline, name, exitWhenIdle, cpuRanks, List(ctx, shared),
        };
        command.SetAction(async (p, ct) =>
        {
            if (p.GetValue(server) is null) return Usage("--server: the Anneal server's address is required, e.g. --server http://10.0.0.5:8000");
            if (!Uri.TryCreate(p.GetValue(server), UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
                return Usage($"--server {p.GetValue(server)}: expected an http:// or https:// address such as http://10.0.0.5:8000");
            if (p.GetValue(token) is not { Length: > 0 } t) return Usage("--token: the server's worker token is required (or set ANNEAL_WORKER_TOKEN)");
            var slots = (p.GetValue(gpus) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (slots.FirstOrDefault(g => !int.TryParse(g, out var i) || i < 0) is { } bad) return Usage($"--gpus: '{bad}' is not a GPU index (expected e.g. 0,1)");
            if (p.GetValue(cpuRanks) && slots.Length > 0) return Usage("--cpu-ranks: only without --gpus (with GPUs a job runs one rank per GPU)");
            if ((p.GetValue(cpuRanks) || slots.Length > 1) && !Anneal.Server.Runner.RankPlacement.MpirunFound())
                ctx.Error.WriteLine("worker: mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev): jobs run as one rank each, and a job asking for several GPUs is left to other workers");
            var work = p.GetValue(workDir) is { } w ? ctx.FullPath(w) : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".anneal-worker");
            var settings = new WorkerSettings(new Uri(url.ToString().TrimEnd('/') + "/"), t, p.GetValue(name) ?? Environment.MachineName,
                slots.Length == 0 ? new string?[] { null } : slots, p.GetValue(gpuType), work, p.GetValue(modelsDir) is { } m ? ctx.FullPath(m) : null,
                !p.GetValue(offline), p.GetValue(exitWhenIdle), TimeSpan.FromSeconds(2), p.GetValue(cpuRanks));
            using var agent = new WorkerAgent(ctx, settings);
            try
            {
                var ran = await agent.RunAsync(ct);
                ctx.Out.WriteLine($"worker: ran {ran} job{(ran == 1 ? "" : "s")}");
            }
            catch (OperationCanceledException) { ctx.Out.WriteLine("Stopping ..."); }
            return ExitCodes.Ok;
        });
        return command;

        int Usage(string message)
        {
            ctx.Error.WriteLine($"error: {message}");
            return ExitCodes.Usage;
        }
    }

    static Command List(CliContext ctx, SharedOptions shared)
    {
        var list = new Command("list", "List the worker hosts registered with the server, their slots and when each was last seen (an admin key)");
        list.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var workers = (await client.ListWorkersAsync(ct)).Data;
            if (p.GetValue(shared.Json))
            {
                ctx.WriteJson(workers);
                return ExitCodes.Ok;
            }
            if (workers.Count == 0)
            {
                ctx.Out.WriteLine("No worker has registered (start one with `anneal worker --server URL --token T --gpus 0,1 --gpu-type H100`).");
                return ExitCodes.Ok;
            }
            ctx.Out.WriteLine($"{"NAME",-24} {"GPU TYPE",-10} {"GPUS/SLOT",9} {"SLOTS",5}  LAST SEEN");
            foreach (var w in workers)
                ctx.Out.WriteLine($"{w.Name,-24} {(w.GpusPerSlot == 0 ? "cpu" : w.GpuType ?? "-"),-10} {w.GpusPerSlot,9} {w.Slots,5}  " +
                    $"{w.LastSeen.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z{(w.Recent ? "" : " (not recently: not counted for placement)")}");
            return ExitCodes.Ok;
        });
        return list;
    }
}
