// `anneal worker` registers its slots when it starts; `anneal worker list` shows them (an admin
// key); and `anneal train` with a [compute] no worker offers is refused at submission with the
// server's reason (exit 2, a config error, as every 4xx the server answers).

namespace Anneal.Cli.Tests.Worker;

public class WorkerRegistryCliTests
{
    const string Token = WorkerBed.Token;

    [Fact]
    public async Task A_started_worker_is_listed_with_its_slots_and_a_job_it_cannot_run_is_refused_at_submission()
    {
        await using var bed = await WorkerBed.StartAsync();
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);

        var none = await box.RunAsync("worker", "list");
        Assert.True(none.ExitCode == 0, none.ToString());
        Assert.Contains("No worker has registered", none.Out);

        // Nothing is queued: it registers, finds no job and stops.
        var worker = await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", Path.Combine(box.Dir, "w"),
            "--offline", "--exit-when-idle", "--name", "l4-host", "--gpus", "0,1", "--gpu-type", "L4");
        Assert.True(worker.ExitCode == 0, worker.ToString());

        // One job may take both GPUs where mpirun can launch its ranks, else one each.
        var perJob = Anneal.Server.Runner.RankPlacement.MpirunFound() ? 2 : 1;
        var list = await box.RunAsync("worker", "list");
        Assert.True(list.ExitCode == 0, list.ToString());
        var row = list.Out.Split('\n').Single(l => l.StartsWith("l4-host", StringComparison.Ordinal));
        Assert.Matches($@"^l4-host\s+L4\s+{perJob}\s+2\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ$", row.TrimEnd());
        var json = await box.RunAsync("worker", "list", "--json");
        Assert.Contains($"\"gpus_per_slot\": {perJob}", json.Out);
        Assert.Contains("L4 (l4-host, 2 slots)\"", json.Out);   // "offer"

        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [compute]
            gpu_type = "H100"
            gpu_count = 1

            [hyperparameters]
            total_steps = 2
            """);
        box.Write("data.jsonl", Samples.Dataset(4));
        var refused = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--dataset", "data.jsonl", "--no-poll");
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains($"requested 1 × H100; workers seen in the last 24 h offer: {perJob} × L4 (l4-host, 2 slots)", refused.Err + refused.Out);

        // `worker` without --server still says what is missing.
        var noServer = await box.RunAsync("worker", "--token", Token);
        Assert.Equal(2, noServer.ExitCode);
        Assert.Contains("--server", noServer.Err);
    }
}
