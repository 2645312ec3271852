// A job asking for several GPUs runs on a worker as that many ranks: here `anneal worker
// --cpu-ranks` (the CPU stand-in for a host's GPUs, as `serve --cpu-ranks`) takes a job with
// [compute] gpu_count = 2 and launches two trainer ranks under mpirun; the job succeeds and its
// uploaded checkpoint was written by a world of two. A worker without ranks leaves the job and
// the job says why.
using System.Text.Json.Nodes;
using Anneal.Cli.Tests.EndToEnd;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Worker;

[Collection("trainer")]
public class WorkerRanksTests
{
    const string Token = WorkerBed.Token;

    [Fact]
    public async Task A_worker_runs_a_job_asking_for_two_devices_as_two_ranks_under_mpirun()
    {
        await using var bed = await WorkerBed.StartAsync();
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [compute]
            gpu_count = 2

            [hyperparameters]
            total_steps = 4
            save_steps = 2
            per_device_batch = 1
            learning_rate = 1e-3
            sequence_length = 32
            """);
        box.Write("data.jsonl", Samples.Dataset(8));
        var jobId = await bed.SubmitAsync();
        string[] common = ["worker", "--server", server.BaseUrl, "--token", Token, "--offline", "--exit-when-idle"];

        var plain = await box.RunAsync([.. common, "--work-dir", Path.Combine(box.Dir, "plain")]);
        Assert.True(plain.ExitCode == 0 && plain.Out.Contains("ran 0 jobs"), plain.ToString());
        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        var events = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events;
        Assert.Contains(events, e => e.Type == "sft.placement.waiting" && e.Message.Contains("requested 2 × GPU; this worker has 0 free"));

        var ranked = await box.RunAsync([.. common, "--cpu-ranks", "--work-dir", Path.Combine(box.Dir, "ranked")]);
        Assert.True(ranked.ExitCode == 0, ranked.ToString());
        Assert.Contains($"worker: job {jobId} attempt 1 on 2 CPU ranks", ranked.Out);
        Assert.Contains($"worker: job {jobId} attempt 1: exit 0; the job is succeeded", ranked.Out);
        var job = await client.GetJobAsync(jobId, default);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(dataDir, "jobs", jobId, "output", "checkpoints", "step-2", "trainer_state.json")))!;
        Assert.Equal(2, state["world_size"]!.GetValue<int>());
        Assert.True(File.Exists(Path.Combine(dataDir, "jobs", jobId, "output", "final", "config.json")), "the final model was not uploaded");

        var both = await box.RunAsync([.. common, "--cpu-ranks", "--gpus", "0"]);
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("--cpu-ranks: only without --gpus", both.Err);
    }
}
