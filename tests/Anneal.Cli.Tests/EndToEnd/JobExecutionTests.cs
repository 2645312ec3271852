// The whole path with real trainer processes: `anneal train` → server → `anneal trainer run`
// (this test's bin/anneal.dll under dotnet) on the built-in tiny model, on CPU. Kept few and
// small (a handful of optimizer steps each); run one at a time so two trainers never share the
// two cores.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.EndToEnd;

[CollectionDefinition("trainer", DisableParallelization = true)]
public sealed class TrainerCollection;

[Collection("trainer")]
public class JobExecutionTests
{
    static readonly string[] SpecCommand = ["train", "--type", "sft", "--config", "configs/train.toml", "--dataset", "ft_data/crafter_sft.jsonl"];

    /// <summary>A config whose run lasts long enough to interrupt (each step is a fraction of a second).</summary>
    static string SmallToml(int steps, int? saveSteps = null) => $"""
        [job]
        model = "{Samples.TinyModel}"
        data = "data.jsonl"

        [hyperparameters]
        total_steps = {steps}
        per_device_batch = 1
        learning_rate = 1e-3
        sequence_length = 32
        {(saveSteps is { } s ? $"save_steps = {s}" : "")}
        """;

    static CliSandbox Sandbox(TestServer server, string backend)
    {
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = backend;
        return box;
    }

    static string JobId(CliResult r) =>
        r.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();

    static async Task<JobObject> WaitForAsync(TestServer server, string jobId, Func<JobObject, IReadOnlyList<JobEvent>, bool> done, int seconds = 120)
    {
        using var client = server.Client();
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            var job = await client.GetJobAsync(jobId, default);
            var events = (await client.GetEventsAsync(jobId, 0, 1000, default)).Events;
            if (done(job, events)) return job;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"job {jobId} is {job.Status}; events: {string.Join(", ", events.Select(e => e.Type))}");
            await Task.Delay(200);
        }
    }

    static bool HasProgress(JobObject _, IReadOnlyList<JobEvent> events) => events.Any(e => e.Type == EventTypes.Progress);

    [Fact]
    public async Task The_spec_toml_with_the_tiny_model_runs_to_succeeded()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("configs/train.toml", Samples.SpecToml);
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(8));
        // The spec's TOML as written: n_epochs 2 × (4 records / (2 × 64 accumulation)) = 2 optimizer steps.
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--examples", "4", "--poll-interval", "0.3"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        var id = JobId(result);
        Assert.Contains($"fine_tuned_model: fft:{Samples.TinyModel}:{id}", result.Out);
        Assert.Contains("sft.progress step 2/2", result.Out);
        Assert.Contains("sft.completed", result.Out);
        Assert.True(File.Exists(Path.Combine(server.DataDir, "jobs", id, "output", "final", "config.json")));
        var models = await box.RunAsync("models", "--fine-tuned");
        Assert.Contains($"fft:{Samples.TinyModel}:{id}", models.Out);
    }

    [Fact]
    public async Task The_spec_toml_with_use_qlora_trains_qlora_to_succeeded_and_its_adapter_loads_back()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("configs/train.toml", Samples.SpecToml.Replace("use_qlora = false", "use_qlora = true"));
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(8));
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--examples", "4", "--poll-interval", "0.3"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        var id = JobId(result);
        Assert.Contains($"fine_tuned_model: qft:{Samples.TinyModel}:{id}", result.Out);
        Assert.Contains("sft.progress step 2/2", result.Out);

        // The output: a PEFT adapter (the base's decoder linears were NF4 while training) and the merged model.
        var final = Path.Combine(server.DataDir, "jobs", id, "output", "final");
        Assert.True(File.Exists(Path.Combine(final, "adapter_model.safetensors")));
        Assert.False(File.Exists(Path.Combine(final, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(final, "merged", "model.safetensors")));
        using var client = server.Client();
        var events = (await client.GetEventsAsync(id, 0, 1000, default)).Events;
        var loading = events.First(e => e.Type == EventTypes.ModelLoading);
        // Events name paths inside the data folder relative to it (absolute when outside it).
        var basePath = Path.GetFullPath(Path.Combine(server.DataDir, loading.Data!["model_path"]!.GetValue<string>()));

        // The adapter loads back onto the base folder (adapter_config.json pointed at it), and the merged model answers.
        var adapter = Path.Combine(box.Dir, "adapter");
        Directory.CreateDirectory(adapter);
        foreach (var f in Directory.GetFiles(final)) File.Copy(f, Path.Combine(adapter, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))!.AsObject();
        Assert.Equal(Samples.TinyModel, config["base_model_name_or_path"]!.GetValue<string>());
        config["base_model_name_or_path"] = basePath;
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), config.ToJsonString());
        var fromAdapter = await box.RunAsync("generate", "--model", "adapter", "--prompt", "What is 1 plus 1?", "--max-new-tokens", "4");
        Assert.True(fromAdapter.ExitCode == 0, fromAdapter.ToString());
        var fromMerged = await box.RunAsync("generate", "--model", Path.Combine(final, "merged"), "--prompt", "What is 1 plus 1?", "--max-new-tokens", "4");
        Assert.True(fromMerged.ExitCode == 0, fromMerged.ToString());
        var models = await box.RunAsync("models", "--fine-tuned");
        Assert.Contains($"qft:{Samples.TinyModel}:{id}", models.Out);
    }

    [Fact]
    public async Task A_model_that_is_not_available_fails_the_job_with_exit_1_and_the_reason()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("train.toml", SmallToml(2));
        box.Write("data.jsonl", Samples.Dataset(4));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--model", "Qwen/Qwen3-0.6B", "--poll-interval", "0.3");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("status: failed", result.Out);
        Assert.Contains($"error: {ErrorCodes.UserConfigError}: model 'Qwen/Qwen3-0.6B' is not on this machine", result.Out);
    }

    [Fact]
    public async Task Data_with_nothing_to_train_on_fails_with_a_user_data_error()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("train.toml", SmallToml(2));
        // Valid chat records, but each prompt is longer than sequence_length 32, so no assistant token is left.
        var longPrompt = string.Join(' ', Enumerable.Repeat("word", 200));
        box.Write("data.jsonl", string.Join("\n", Enumerable.Range(0, 4).Select(i =>
            $$"""{"messages":[{"role":"user","content":"{{longPrompt}} {{i}}"},{"role":"assistant","content":"ok"}]}""")) + "\n");
        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.3");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("status: failed", result.Out);
        Assert.Contains($"error: {ErrorCodes.UserDataError}:", result.Out);
        Assert.Contains("sequence_length 32", result.Out);
    }

    [Fact]
    public async Task Cancelling_a_running_job_stops_it_and_the_follower_exits_1()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("train.toml", SmallToml(2000));
        box.Write("data.jsonl", Samples.Dataset(8));
        var follow = box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.3");
        var id = await FirstJobIdAsync(server);
        await WaitForAsync(server, id, HasProgress);

        using var other = Sandbox(server, server.BaseUrl);
        var cancel = await other.RunAsync("jobs", "cancel", id);
        Assert.True(cancel.ExitCode == 0, cancel.ToString());

        var result = await follow;
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("status: cancelled", result.Out);
        var job = await WaitForAsync(server, id, (_, events) => events.Any(e => e.Type == EventTypes.Cancelled), 60);
        Assert.Equal(JobStatus.Cancelled, job.Status);
        Assert.True(job.Progress!.Step < 2000);
    }

    [Fact]
    public async Task A_trainer_killed_with_sigkill_fails_the_job_as_trainer_crashed()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("train.toml", SmallToml(2000));
        box.Write("data.jsonl", Samples.Dataset(8));
        var submitted = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        var id = JobId(submitted);
        await WaitForAsync(server, id, HasProgress);

        var trainer = TrainerProcessOf(id);
        Assert.NotNull(trainer);
        trainer.Kill(); // SIGKILL: no event, no clean exit

        var result = await box.RunAsync("jobs", "events", id, "--follow", "--poll-interval", "0.3");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("status: failed", result.Out);
        Assert.Contains($"error: {ErrorCodes.TrainerCrashed}:", result.Out);
        var job = await WaitForAsync(server, id, (j, _) => JobStatus.IsTerminal(j.Status), 5);
        Assert.Equal(ErrorCodes.TrainerCrashed, job.Error!.Code);
    }

    [Fact]
    public async Task A_server_restart_mid_run_requeues_the_job_and_the_follower_sees_it_succeed()
    {
        var port = FreePort();
        var url = $"http://127.0.0.1:{port}";
        var dataDir = Directory.CreateTempSubdirectory("anneal-cli-restart-").FullName;
        var first = await TestServer.StartAsync(runJobs: true, dataDir: dataDir, urls: url);
        using var box = Sandbox(first, url);
        // Long enough (about 5 s on a quiet machine, 12 ms a step) that the trainer is still running
        // when the server stops after the first checkpoint.
        box.Write("train.toml", SmallToml(400, saveSteps: 20));
        box.Write("data.jsonl", Samples.Dataset(8));
        var follow = box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.3");
        var id = await FirstJobIdAsync(first);
        await WaitForAsync(first, id, (_, events) => events.Any(e => e.Type == EventTypes.CheckpointSaved));

        await first.Server.DisposeAsync(); // graceful stop while the trainer runs
        // Stay down for several poll intervals so the follower really meets the outage (a restart
        // faster than one poll would let it pass unnoticed and the "retrying" check would race).
        await Task.Delay(TimeSpan.FromSeconds(2));
        await using var second = await TestServer.StartAsync(runJobs: true, dataDir: dataDir, urls: url);

        var result = await follow;
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains(EventTypes.Requeued, result.Out);
        Assert.Contains("retrying", result.Err);
    }

    [Fact]
    public async Task Pause_then_resume_continues_from_the_checkpoint_to_succeeded()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = Sandbox(server, server.BaseUrl);
        // Long enough that the pause (a CLI process away) lands while the trainer runs, also on a quiet machine.
        box.Write("train.toml", SmallToml(400, saveSteps: 20));
        box.Write("data.jsonl", Samples.Dataset(8));
        var submitted = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll");
        var id = JobId(submitted);
        await WaitForAsync(server, id, (_, events) => events.Any(e => e.Type == EventTypes.CheckpointSaved));

        var pause = await box.RunAsync("jobs", "pause", id);
        Assert.True(pause.ExitCode == 0, pause.ToString());
        await WaitForAsync(server, id, (j, _) => j.Status == JobStatus.Paused, 60);
        var resume = await box.RunAsync("jobs", "resume", id);
        Assert.True(resume.ExitCode == 0, resume.ToString());

        var result = await box.RunAsync("jobs", "events", id, "--follow", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains("sft.progress step 400/400", result.Out);
    }

    [Fact]
    public async Task Two_jobs_submitted_at_once_run_one_after_the_other_and_both_succeed()
    {
        await using var server = await TestServer.StartAsync(runJobs: true, maxConcurrentJobs: 1);
        using var box = Sandbox(server, server.BaseUrl);
        box.Write("a/train.toml", SmallToml(2));
        box.Write("a/data.jsonl", Samples.Dataset(4));
        box.Write("b/train.toml", SmallToml(3));
        box.Write("b/data.jsonl", Samples.Dataset(5));
        var a = await box.RunAsync("train", "--type", "sft", "--config", "a/train.toml", "--no-poll");
        var b = await box.RunAsync("train", "--type", "sft", "--config", "b/train.toml", "--no-poll");
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, a + "\n" + b);

        var jobA = await WaitForAsync(server, JobId(a), (j, _) => JobStatus.IsTerminal(j.Status));
        var jobB = await WaitForAsync(server, JobId(b), (j, _) => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, jobA.Status);
        Assert.Equal(JobStatus.Succeeded, jobB.Status);
        // One trainer slot: the second started only after the first finished.
        Assert.True(jobB.StartedAt >= jobA.FinishedAt, $"A {jobA.StartedAt}–{jobA.FinishedAt}, B started {jobB.StartedAt}");

        // The --no-poll re-run reports the finished job (exit 0 for succeeded) without a new one.
        var again = await box.RunAsync("train", "--type", "sft", "--config", "a/train.toml", "--no-poll");
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Contains("status: succeeded", again.Out);
        Assert.Equal(2, await server.JobCountAsync());
    }

    static async Task<string> FirstJobIdAsync(TestServer server)
    {
        using var client = server.Client();
        for (var i = 0; i < 300; i++)
        {
            var jobs = (await client.ListJobsAsync(null, 10, default)).Jobs;
            if (jobs.Count > 0) return jobs[0].Id;
            await Task.Delay(100);
        }
        throw new TimeoutException("no job was created");
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>The `anneal trainer run --spec …/jobs/&lt;id&gt;/spec.json` process of a job (Linux /proc).</summary>
    static Process? TrainerProcessOf(string jobId)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (cmdline.Contains("trainer\0run\0") && cmdline.Contains(jobId)) return Process.GetProcessById(pid);
        }
        return null;
    }
}
