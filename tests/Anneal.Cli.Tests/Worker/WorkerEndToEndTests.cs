// `anneal worker` end to end with the real trainer: a server that runs no trainer itself (as on a
// host without GPUs), `anneal train --no-poll` submits a job, and a worker in its own folder (no
// shared disk) claims it, downloads the dataset, runs `anneal trainer run` on the tiny model,
// uploads its checkpoint and final model, and the job succeeds on the server with the model there.
// A worker process killed with SIGKILL mid-run loses its lease; the job resumes on the next worker
// from the checkpoint the first one uploaded. A worker frozen with SIGSTOP (with its trainer, as
// when its host or VM is paused) until its lease lapses comes back (SIGCONT) after another worker
// finished the job: its late calls are refused (409 lease_lost), the job keeps the second
// attempt's result, and it stops its trainer.
using System.Diagnostics;
using Anneal.Cli.Tests.EndToEnd;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Worker;

[Collection("trainer")]
public class WorkerEndToEndTests
{
    const string Token = WorkerBed.Token;

    [Fact]
    public async Task A_worker_on_its_own_folder_runs_the_job_and_the_server_gets_its_checkpoint_and_final_model()
    {
        await using var bed = await WorkerBed.StartAsync();
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [hyperparameters]
            total_steps = 4
            save_steps = 2
            per_device_batch = 1
            learning_rate = 1e-3
            sequence_length = 32
            """);
        box.Write("data.jsonl", Samples.Dataset(6));
        var jobId = await bed.SubmitAsync();

        var workDir = Path.Combine(box.Dir, "worker");
        var worker = await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", workDir, "--offline", "--exit-when-idle", "--name", "gpu-host-1");
        Assert.True(worker.ExitCode == 0, worker.ToString());
        Assert.Contains($"worker: job {jobId} attempt 1: exit 0; the job is succeeded", worker.Out);

        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        var job = await client.GetJobAsync(jobId, default);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        Assert.Equal($"fft:{Samples.TinyModel}:{jobId}", job.FineTunedModel);
        var events = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events;
        Assert.Contains(events, e => e.Type == EventTypes.Running && e.Message.Contains("on worker gpu-host-1"));
        Assert.Contains(events, e => e.Type == EventTypes.Progress && e.Data?["step"]?.GetValue<long>() == 4);
        var output = Path.Combine(dataDir, "jobs", jobId, "output");
        Assert.True(File.Exists(Path.Combine(output, "final", "config.json")), "the final model was not uploaded");
        Assert.True(Directory.Exists(Path.Combine(output, "checkpoints", "step-2")), "the checkpoint was not uploaded");
        // The dataset was fetched into the worker's own cache, by its sha256.
        Assert.Single(Directory.GetFiles(Path.Combine(workDir, "files")));
        var models = await box.RunAsync("models", "--fine-tuned");
        Assert.Contains($"fft:{Samples.TinyModel}:{jobId}", models.Out);

        // Bad input: no token, a server that is not a URL.
        var noToken = await box.RunAsync("worker", "--server", server.BaseUrl);
        Assert.Equal(2, noToken.ExitCode);
        Assert.Contains("--token", noToken.Err);
        var badServer = await box.RunAsync("worker", "--server", "gpu-host:8000", "--token", Token);
        Assert.Contains("expected an http:// or https:// address", badServer.Err);
    }

    [Fact]
    public async Task A_worker_killed_mid_run_loses_its_lease_and_the_next_worker_resumes_from_its_uploaded_checkpoint()
    {
        await using var bed = await WorkerBed.StartAsync(o => o with { LeaseDuration = TimeSpan.FromSeconds(6) });
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [hyperparameters]
            total_steps = 200
            save_steps = 20
            per_device_batch = 1
            learning_rate = 1e-3
            sequence_length = 32
            """);
        box.Write("data.jsonl", Samples.Dataset(6));
        var jobId = await bed.SubmitAsync();

        // The first worker, a real process: killed once its first checkpoint is on the server.
        var self = CliContext.SelfCommandOfThisProcess();
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(["worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", Path.Combine(box.Dir, "worker-1"), "--offline"]))
            psi.ArgumentList.Add(a);
        using var first = Process.Start(psi)!;
        _ = first.StandardOutput.ReadToEndAsync();
        _ = first.StandardError.ReadToEndAsync();
        var uploaded = Path.Combine(dataDir, "jobs", jobId, "output", "checkpoints", "step-20");
        for (var i = 0; i < 1200 && !Directory.Exists(uploaded) && !first.HasExited; i++) await Task.Delay(100);
        Assert.True(Directory.Exists(uploaded), "the first worker never uploaded its checkpoint");
        first.Kill(entireProcessTree: false);
        await first.WaitForExitAsync();

        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        JobEvent? requeued = null;
        for (var i = 0; i < 300 && requeued is null; i++)
        {
            await Task.Delay(100);
            requeued = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events.FirstOrDefault(e => e.Type == EventTypes.Requeued);
        }
        Assert.NotNull(requeued);
        Assert.Equal("lease_expired", requeued.Data!["reason"]!.GetValue<string>());
        var resumeStep = requeued.Data!["resume_step"]!.GetValue<long>();
        Assert.True(resumeStep >= 20, requeued.Message);

        var second = await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", Path.Combine(box.Dir, "worker-2"), "--offline", "--exit-when-idle");
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.True(second.Out.Contains($"worker: job {jobId} attempt 2: exit 0; the job is succeeded"), second.ToString());
        var events = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events;
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
        // Attempt 2 continued after the uploaded checkpoint instead of starting over.
        var secondRun = events.Last(e => e.Type == EventTypes.Running).Seq;
        var firstStepAfter = events.First(e => e.Seq > secondRun && e.Type == EventTypes.Progress).Data!["step"]!.GetValue<long>();
        Assert.True(firstStepAfter > resumeStep, $"attempt 2 started at step {firstStepAfter}, not after the checkpoint at step {resumeStep}");
        Assert.Equal(JobStatus.Succeeded, (await client.GetJobAsync(jobId, default)).Status);
    }

    [Fact]
    public async Task A_paused_worker_whose_lease_lapsed_is_refused_when_it_comes_back_and_stops_its_trainer()
    {
        await using var bed = await WorkerBed.StartAsync(o => o with { LeaseDuration = TimeSpan.FromSeconds(3), CancelGracePeriod = TimeSpan.FromSeconds(2) });
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [hyperparameters]
            total_steps = 200
            save_steps = 20
            per_device_batch = 1
            learning_rate = 1e-3
            sequence_length = 32
            """);
        box.Write("data.jsonl", Samples.Dataset(6));
        var jobId = await bed.SubmitAsync();

        using var paused = WorkerProcess.Start(server.BaseUrl, Token, Path.Combine(box.Dir, "worker-1"), "paused-host");
        var uploaded = Path.Combine(dataDir, "jobs", jobId, "output", "checkpoints", "step-20");
        for (var i = 0; i < 1200 && !Directory.Exists(uploaded) && !paused.Process.HasExited; i++) await Task.Delay(100);
        Assert.True(Directory.Exists(uploaded), "the first worker never uploaded its checkpoint: " + paused.Output);
        var trainer = Assert.Single(EndToEnd.ServeProcess.TrainersOf(paused.WorkDir));
        paused.Signal("STOP");
        WorkerProcess.Signal(trainer, "STOP");

        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        JobEvent? requeued = null;
        for (var i = 0; i < 300 && requeued is null; i++)
        {
            await Task.Delay(100);
            requeued = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events.FirstOrDefault(e => e.Type == EventTypes.Requeued);
        }
        Assert.NotNull(requeued);
        Assert.Equal("lease_expired", requeued.Data!["reason"]!.GetValue<string>());

        var workDir2 = Path.Combine(box.Dir, "worker-2");
        var second = await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", workDir2, "--offline", "--exit-when-idle", "--name", "second-host");
        Assert.True(second.Out.Contains($"worker: job {jobId} attempt 2: exit 0; the job is succeeded"), second.ToString());
        var done = await AllEvents(client, jobId);
        // The frozen worker's trainer is still there, mid-run.
        Assert.Equal([trainer], EndToEnd.ServeProcess.TrainersOf(paused.WorkDir));
        var refusedBefore = await LeaseRefusals(server.BaseUrl);

        paused.Signal("CONT");
        WorkerProcess.Signal(trainer, "CONT");
        Assert.True(await paused.SaysWithin($"worker: job {jobId} attempt 1: lease lost (the server refused ", TimeSpan.FromSeconds(60)), paused.Output);
        Assert.True(await EndToEnd.ServeProcess.NoTrainersWithin(paused.WorkDir, TimeSpan.FromSeconds(30)), "the paused worker did not stop its trainer");
        Assert.True(await LeaseRefusals(server.BaseUrl) > refusedBefore, "the server refused none of the paused worker's calls");

        // Nothing it sent after its lease lapsed landed: no event, and the final model is attempt 2's.
        var after = await AllEvents(client, jobId);
        Assert.Equal(done.Select(e => e.Seq), after.Select(e => e.Seq));
        var job = await client.GetJobAsync(jobId, default);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        var serverFinal = Path.Combine(dataDir, "jobs", jobId, "output", "final");
        var secondFinal = Path.Combine(workDir2, "jobs", jobId, "attempt-2", "output", "final");
        var files = Directory.GetFiles(secondFinal, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(secondFinal, f)).Order().ToList();
        Assert.Equal(files, Directory.GetFiles(serverFinal, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(serverFinal, f)).Order());
        foreach (var f in files)
            Assert.True(File.ReadAllBytes(Path.Combine(secondFinal, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(serverFinal, f))), $"final/{f} is not attempt 2's");
        // Attempt 2 continued after the checkpoint and its steps never went back.
        var secondRun = after.Last(e => e.Type == EventTypes.Running);
        Assert.Equal(2, secondRun.Data!["attempt"]!.GetValue<long>());
        var steps = after.Where(e => e.Seq > secondRun.Seq && e.Type == EventTypes.Progress).Select(e => e.Data!["step"]!.GetValue<long>()).ToList();
        Assert.True(steps[0] > requeued.Data!["resume_step"]!.GetValue<long>());
        Assert.Equal(steps.Order(), steps);
        Assert.Equal(200, steps[^1]);
    }

    static async Task<List<JobEvent>> AllEvents(Anneal.Cli.Http.AnnealClient client, string jobId)
    {
        var all = new List<JobEvent>();
        while (true)
        {
            var page = (await client.GetEventsAsync(jobId, all.Count == 0 ? 0 : all[^1].Seq, 1000, default)).Events;
            if (page.Count == 0) return all;
            all.AddRange(page);
        }
    }

    static async Task<long> LeaseRefusals(string baseUrl)
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync(baseUrl + "/metrics");
        var line = text.Split('\n').Single(l => l.StartsWith("anneal_worker_lease_refusals_total ", StringComparison.Ordinal));
        return long.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
    }
}
