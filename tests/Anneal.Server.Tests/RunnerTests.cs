// The scheduler and trainer runner against script trainers (real processes, real pipes, real
// signals): success registers the fine-tuned model, trainer-reported failures keep their code,
// a killed trainer is trainer_crashed with its log tail, cancel stops the process, jobs queue
// behind MaxConcurrentJobs, and a restart re-queues a running job from its checkpoint.
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Server.Tests;

public class RunnerTests
{
    static Task<TestServer> Start(string script, Func<ServerOptions, ServerOptions>? more = null) =>
        TestServer.StartAsync(o => (more ?? (x => x))(o with { TrainerCommand = ScriptTrainer.Write(script) }));

    static async Task<JobObject> Submit(TestServer t, JsonObject? hp = null, string model = "anneal/tiny-qwen3")
    {
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id, hp, model);
        await t.StartJobAsync(job.Id);
        return job;
    }

    static string JobDir(TestServer t, string id) => Path.Combine(t.DataDir, "jobs", id);

    static async Task WaitForFile(string path)
    {
        for (var i = 0; i < 400 && !File.Exists(path); i++) await Task.Delay(50);
        Assert.True(File.Exists(path), $"{path} never appeared");
    }

    [Theory]
    [InlineData(null, "runs the job on cpu", "cpu")]
    public async Task A_requested_compute_section_is_reported_as_a_warning_naming_what_the_server_uses(string? gpu, string actual, string device)
    {
        await using var t = await Start(ScriptTrainer.Succeeds, o => o with { Gpus = gpu is null ? [] : [gpu] });
        var file = await t.UploadReadyAsync();
        var body = (JsonObject)TestServer.JobBody(file.Id);
        body["metadata"] = new JsonObject
        {
            ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 4, ["nodes"] = 1 } },
        };
        var created = await t.Http.PostAsync("learning/jobs", TestServer.Json(body));
        var job = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        await t.StartJobAsync(job.Id);
        Assert.Equal(JobStatus.Succeeded, (await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status))).Status);

        var warning = Assert.Single(await t.EventsAsync(job.Id), e => e.Level == "warning");
        Assert.Equal(EventTypes.Log, warning.Type);
        Assert.Contains("requested 4 × H100 on 1 node", warning.Message);
        Assert.Contains(actual, warning.Message);
        Assert.Equal(device, warning.Data!["device"]!.GetValue<string>());
        Assert.Equal("H100", warning.Data["requested"]!["gpu_type"]!.GetValue<string>());

        // Without a [compute] section there is nothing to warn about.
        var plain = await Submit(t);
        await t.WaitJobAsync(plain.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.DoesNotContain(await t.EventsAsync(plain.Id), e => e.Level == "warning");
    }

    [Fact]
    public async Task A_successful_trainer_registers_the_fine_tuned_model_with_events_metrics_progress_and_checkpoints()
    {
        await using var t = await Start(ScriptTrainer.Succeeds);
        var job = await Submit(t, new JsonObject { ["total_steps"] = 2, ["training_mode"] = "lora" });
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, done.Status);
        var ft = $"ft:anneal/tiny-qwen3:{job.Id}";
        Assert.Equal(ft, done.FineTunedModel);
        Assert.Equal(80, done.TrainedTokens);
        Assert.Equal(new JobProgress(2, 2, 1.0, 130, 0), done.Progress);
        Assert.NotNull(done.StartedAt);
        Assert.NotNull(done.FinishedAt);

        var events = await t.EventsAsync(job.Id);
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
        Assert.Equal([EventTypes.Created, EventTypes.Queued, EventTypes.Running, EventTypes.ModelLoading, EventTypes.Log, EventTypes.Progress,
            EventTypes.CheckpointSaved, EventTypes.Progress, EventTypes.ValidationSummary, EventTypes.Completed], events.Select(e => e.Type));
        Assert.Equal(ft, events[^1].Data!["fine_tuned_model"]!.GetValue<string>());

        var metrics = (await t.Http.GetFromJsonAsync<MetricList>($"learning/jobs/{job.Id}/metrics", AnnealJson.Options))!.Points;
        Assert.Equal([2.5, 2.0], metrics.Where(p => p.Name == MetricNames.TrainLoss).Select(p => p.Value));
        Assert.Equal([0.001, 0.0005], metrics.Where(p => p.Name == MetricNames.TrainLr).Select(p => p.Value));
        Assert.Equal(2, metrics.Count(p => p.Name == MetricNames.TrainGradNorm));
        Assert.Equal(2, metrics.Count(p => p.Name == MetricNames.TrainTokensPerSecond));
        Assert.Equal([2.25], metrics.Where(p => p.Name == MetricNames.ValLoss).Select(p => p.Value));
        var afterStep1 = (await t.Http.GetFromJsonAsync<MetricList>($"learning/jobs/{job.Id}/metrics?after_step=1&name=train.loss", AnnealJson.Options))!.Points;
        Assert.Equal([2.0], afterStep1.Select(p => p.Value));

        var checkpoints = (await t.Http.GetFromJsonAsync<CheckpointList>($"learning/jobs/{job.Id}/checkpoints", AnnealJson.Options))!.Data;
        var checkpoint = Assert.Single(checkpoints);
        Assert.Equal(1, checkpoint.Step);
        Assert.Equal($"{ft}:step-1", checkpoint.Id);
        Assert.Equal(2.5, checkpoint.Metrics!["loss"]!.GetValue<double>());

        var models = (await t.Http.GetFromJsonAsync<FineTunedModelList>("learning/models", AnnealJson.Options))!.Data;
        var model = Assert.Single(models);
        Assert.Equal((ft, "anneal/tiny-qwen3", job.Id, "ready"), (model.Id, model.BaseModel, model.JobId, model.Status));

        // The spec the trainer got, and what it was started with.
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, job.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(Path.Combine(t.DataDir, "models", "anneal", "tiny-qwen3"), spec.ModelPath);
        Assert.Equal(TrainingModes.Lora, spec.Settings.Mode);
        Assert.Equal(2, spec.Settings.TotalSteps);
        Assert.True(spec.MergeLora);
        Assert.Equal("cpu", spec.Device);
        Assert.Null(spec.ResumeFrom);
        // Messages name the user's upload, not the blob path.
        Assert.Equal($"train.jsonl ({job.TrainingFileId})", spec.TrainingFileName);
        Assert.Null(spec.ValidationFileName);
        Assert.Equal(Path.Combine(t.DataDir, "files", (await t.Http.GetFromJsonAsync<FileObject>($"learning/files/{job.TrainingFileId}", AnnealJson.Options))!.Sha256), spec.TrainingFile);
        var args = await File.ReadAllLinesAsync(Path.Combine(JobDir(t, job.Id), "args.txt"));
        Assert.Equal($"trainer run --spec {Path.Combine(JobDir(t, job.Id), "spec.json")}", args[0]);
        Assert.Equal("cuda=[]", args[1]);
        Assert.Equal("loading model\n", await t.Http.GetStringAsync($"learning/jobs/{job.Id}/logs"));

        // A LoRA checkpoint is an adapter: refused as a base model, naming why.
        var adapter = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs",
            TestServer.Json(TestServer.JobBody(job.TrainingFileId, checkpoint.Id))), System.Net.HttpStatusCode.UnprocessableEntity);
        Assert.Contains("adapter", adapter["detail"]!.GetValue<string>());

        // The fine-tuned model continues training as a base: its merged folder becomes the model path.
        var next = await Submit(t, new JsonObject { ["total_steps"] = 2, ["training_mode"] = "lora" }, model: ft);
        Assert.Equal(JobStatus.Succeeded, (await t.WaitJobAsync(next.Id, j => JobStatus.IsTerminal(j.Status))).Status);
        var nextSpec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, next.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(Path.Combine(JobDir(t, job.Id), "output", "final", "merged"), nextSpec.ModelPath);
        Assert.Equal($"ft:anneal/tiny-qwen3:{next.Id}", (await t.GetJobAsync(next.Id)).FineTunedModel);
    }

    [Fact]
    public async Task A_full_fine_tune_checkpoint_id_trains_as_a_model_from_the_checkpoint_folder()
    {
        await using var t = await Start(ScriptTrainer.Succeeds);
        var job = await Submit(t, new JsonObject { ["total_steps"] = 2 });
        Assert.Equal(JobStatus.Succeeded, (await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status))).Status);
        var checkpoint = Assert.Single((await t.Http.GetFromJsonAsync<CheckpointList>($"learning/jobs/{job.Id}/checkpoints", AnnealJson.Options))!.Data);
        Assert.Equal($"fft:anneal/tiny-qwen3:{job.Id}:step-1", checkpoint.Id);
        var next = await Submit(t, new JsonObject { ["total_steps"] = 2 }, model: checkpoint.Id);
        Assert.Equal(JobStatus.Succeeded, (await t.WaitJobAsync(next.Id, j => JobStatus.IsTerminal(j.Status))).Status);
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, next.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(Path.Combine(JobDir(t, job.Id), "output", "checkpoints", "step-1"), spec.ModelPath);
        Assert.Equal($"fft:anneal/tiny-qwen3:{next.Id}", (await t.GetJobAsync(next.Id)).FineTunedModel);
    }

    [Fact]
    public async Task A_trainer_reporting_user_data_error_fails_the_job_with_that_code()
    {
        await using var t = await Start(ScriptTrainer.UserDataError);
        var job = await Submit(t);
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Failed, done.Status);
        Assert.Equal(ErrorCodes.UserDataError, done.Error!.Code);
        Assert.Contains("Line 3", done.Error.Message);
        Assert.Equal(2, done.Error.LogTail!.Count);
        Assert.Equal("Traceback-like diagnostics", done.Error.LogTail[0]);
        Assert.EndsWith($"server: Training failed: user_data_error: {done.Error.Message}", done.Error.LogTail[1]);
        var last = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal(EventTypes.Failed, last.Type);
        // The message is said once: a headline, with the details in data.error.
        Assert.Equal("Training failed", last.Message);
        Assert.Equal(done.Error.Message, last.Data!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(ErrorCodes.UserDataError, last.Data!["error"]!["code"]!.GetValue<string>());
        Assert.Empty((await t.Http.GetFromJsonAsync<FineTunedModelList>("learning/models", AnnealJson.Options))!.Data);
    }

    [Fact]
    public async Task A_killed_trainer_is_trainer_crashed_with_the_last_20_stderr_lines()
    {
        await using var t = await Start(ScriptTrainer.Killed);
        var job = await Submit(t);
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Failed, done.Status);
        Assert.Equal(ErrorCodes.TrainerCrashed, done.Error!.Code);
        Assert.Contains("137", done.Error.Message);
        Assert.Equal(Enumerable.Range(7, 19).Select(i => $"stderr line {i}"), done.Error.LogTail!.Take(19));
        Assert.EndsWith($"server: Training failed: trainer_crashed: {done.Error.Message}", done.Error.LogTail![^1]);
        var logs = await t.Http.GetStringAsync($"learning/jobs/{job.Id}/logs");
        Assert.Contains("stderr line 1\n", logs);
        Assert.Contains("server: Training failed: trainer_crashed", logs);
    }

    [Fact]
    public async Task Cancel_of_a_running_job_stops_the_trainer_within_the_grace_period()
    {
        await using var t = await Start(ScriptTrainer.RunsUntilTerm);
        var job = await Submit(t);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        var response = await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null);
        var cancelled = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.Equal(JobStatus.Cancelled, cancelled.Status);
        // Stopped by SIGTERM: the event carries the trainer's own sft.cancelled data (a kill would leave none).
        var events = await t.EventsAsync(job.Id);
        Assert.Equal(EventTypes.Cancelled, events[^1].Type);
        Assert.Equal(1, events[^1].Data!["step"]!.GetValue<int>());
        Assert.Single(events, e => e.Type == EventTypes.Cancelled);
    }

    [Fact]
    public async Task Pause_stops_the_trainer_and_resume_continues_from_the_latest_checkpoint()
    {
        await using var t = await Start(ScriptTrainer.CheckpointThenWaits);
        var job = await Submit(t);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        for (var i = 0; i < 100 && (await t.EventsAsync(job.Id)).All(e => e.Type != EventTypes.CheckpointSaved); i++) await Task.Delay(50);

        var paused = (await (await t.Http.PostAsync($"learning/jobs/{job.Id}/pause", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.Equal(JobStatus.Paused, paused.Status);
        var checkpointDir = Path.Combine(JobDir(t, job.Id), "output", "checkpoints", "step-3");
        var pausedEvent = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal("sft.paused", pausedEvent.Type);
        Assert.Equal(Path.Combine("output", "checkpoints", "step-3"), pausedEvent.Data!["resume_from"]!.GetValue<string>()); // relative to the job
        Assert.Equal(JobStatus.Paused, (await t.GetJobAsync(job.Id)).Status); // stays paused: nothing claims it
        await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/pause", null), System.Net.HttpStatusCode.Conflict);

        File.Delete(Path.Combine(JobDir(t, job.Id), "started"));
        var resumed = (await (await t.Http.PostAsync($"learning/jobs/{job.Id}/resume", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.NotEqual(JobStatus.Paused, resumed.Status);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, job.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(checkpointDir, spec.ResumeFrom);
        Assert.Contains("sft.resumed", (await t.EventsAsync(job.Id)).Select(e => e.Type));
        Assert.Equal(JobStatus.Cancelled, (await (await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!.Status);
    }

    [Fact]
    public async Task Pause_before_any_checkpoint_is_refused_and_the_trainer_keeps_running()
    {
        await using var t = await Start(ScriptTrainer.RunsUntilTerm);
        var job = await Submit(t);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        var problem = await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/pause", null), System.Net.HttpStatusCode.Conflict);
        Assert.Contains("no checkpoint yet", problem["detail"]!.GetValue<string>());
        Assert.Equal(JobStatus.Running, (await t.GetJobAsync(job.Id)).Status);
    }

    [Fact]
    public async Task A_trainer_ignoring_sigterm_is_killed_after_the_grace_period()
    {
        await using var t = await Start(ScriptTrainer.IgnoresTerm, o => o with { CancelGracePeriod = TimeSpan.FromSeconds(1) });
        var job = await Submit(t);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        var cancelled = (await (await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.Equal(JobStatus.Cancelled, cancelled.Status);
        Assert.Empty((await t.EventsAsync(job.Id))[^1].Data!); // no sft.cancelled from the trainer: it was killed
    }

    [Fact]
    public async Task With_one_slot_two_queued_jobs_run_one_after_the_other()
    {
        await using var t = await Start(ScriptTrainer.ShortSuccess, o => o with { MaxConcurrentJobs = 1 });
        var a = await Submit(t);
        var b = await Submit(t);
        var sawBoth = false;
        while (true)
        {
            // One query, one snapshot: never two jobs running at once.
            var running = (await t.Http.GetFromJsonAsync<JobList>("learning/jobs?status=running", AnnealJson.Options))!.Jobs;
            sawBoth |= running.Count > 1;
            var (ja, jb) = (await t.GetJobAsync(a.Id), await t.GetJobAsync(b.Id));
            if (JobStatus.IsTerminal(ja.Status) && JobStatus.IsTerminal(jb.Status)) break;
            await Task.Delay(20);
        }
        Assert.False(sawBoth);
        var (first, second) = (await t.GetJobAsync(a.Id), await t.GetJobAsync(b.Id));
        Assert.Equal(JobStatus.Succeeded, first.Status);
        Assert.Equal(JobStatus.Succeeded, second.Status);
        Assert.True(second.StartedAt >= first.FinishedAt, $"b started {second.StartedAt:O} before a finished {first.FinishedAt:O}");
    }

    [Fact]
    public async Task A_job_asking_for_more_gpus_than_the_server_has_is_refused_naming_both_numbers()
    {
        await using var t = await Start(ScriptTrainer.Succeeds, o => o with { Gpus = ["3"] });
        var file = await t.UploadReadyAsync();
        var body = (JsonObject)TestServer.JobBody(file.Id);
        body["metadata"] = new JsonObject
        {
            ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 4, ["nodes"] = 1 } },
        };
        // Refused when created (no worker can take it either: the server has no worker token), so no trainer ever starts.
        var refused = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(body)), System.Net.HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.ComputeUnavailable, refused["code"]!.GetValue<string>());
        Assert.Contains("requested 4 × H100; this server trains on 1 GPU (--gpus 3)", refused["detail"]!.GetValue<string>());
        Assert.Empty((await t.Http.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);
    }

    [Fact]
    public async Task Gpus_are_handed_out_one_per_job_through_cuda_visible_devices()
    {
        await using var t = await Start(ScriptTrainer.ShortSuccess, o => o with { Gpus = ["3"], MaxConcurrentJobs = 2 });
        var job = await Submit(t);
        await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal("cuda=[3]", (await File.ReadAllLinesAsync(Path.Combine(JobDir(t, job.Id), "args.txt")))[1]);
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, job.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal("cuda", spec.Device);
    }

    [Fact]
    public async Task A_model_missing_locally_fails_the_job_naming_where_it_looked()
    {
        var models = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        await using var t = await Start(ScriptTrainer.ShortSuccess, o => o with { ModelsDir = models, AllowModelDownload = false });
        var job = await Submit(t, model: "Qwen/Qwen3-0.6B");
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Failed, done.Status);
        Assert.Equal(ErrorCodes.UserConfigError, done.Error!.Code);
        Assert.Contains(Path.Combine(models, "Qwen", "Qwen3-0.6B"), done.Error.Message);
        Assert.Contains(Path.Combine(t.DataDir, "models", "Qwen", "Qwen3-0.6B"), done.Error.Message);
        Assert.Contains("downloads are switched off", done.Error.Message);
        // No trainer ran, yet the log and its tail say why the job failed.
        Assert.Contains("server: Training failed: user_config_error:", Assert.Single(done.Error.LogTail!));
        Assert.Contains("downloads are switched off", await t.Http.GetStringAsync($"learning/jobs/{job.Id}/logs"));
    }

    [Fact]
    public async Task A_fine_tuned_model_is_checked_against_its_base_models_context_length()
    {
        await using var t = await Start(ScriptTrainer.ShortSuccess);
        var job = await Submit(t);
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, done.Status);
        var file = await t.UploadReadyAsync();
        var problem = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id, done.FineTunedModel!,
            new JsonObject { ["n_epochs"] = 1, ["sequence_length"] = 4096 }))), System.Net.HttpStatusCode.UnprocessableEntity);
        Assert.Contains("sequence_length 4096 exceeds the context length 2048 of anneal/tiny-qwen3", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_trainer_failing_without_stderr_still_leaves_a_log_and_a_log_tail()
    {
        await using var t = await Start(ScriptTrainer.SilentUserDataError);
        var job = await Submit(t);
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(ErrorCodes.UserDataError, done.Error!.Code);
        Assert.Contains("server: Training failed: user_data_error: training file train.jsonl", Assert.Single(done.Error.LogTail!));
        Assert.Contains("training file train.jsonl", await t.Http.GetStringAsync($"learning/jobs/{job.Id}/logs"));
    }

    [Fact]
    public async Task A_model_in_the_models_folder_is_passed_to_the_trainer()
    {
        var models = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        var folder = Path.Combine(models, "Qwen", "Qwen3-0.6B");
        Directory.CreateDirectory(folder);
        await File.WriteAllTextAsync(Path.Combine(folder, "config.json"), "{}");
        await using var t = await Start(ScriptTrainer.ShortSuccess, o => o with { ModelsDir = models, AllowModelDownload = false });
        var job = await Submit(t, model: "Qwen/Qwen3-0.6B");
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, done.Status);
        Assert.Equal($"fft:Qwen/Qwen3-0.6B:{job.Id}", done.FineTunedModel);
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, job.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(folder, spec.ModelPath);
        Assert.False(spec.MergeLora);
        Directory.Delete(models, true);
    }

    [Fact]
    public async Task A_restart_during_a_run_requeues_the_job_from_its_checkpoint_and_fails_it_after_too_many_restarts()
    {
        await using var t = await Start(ScriptTrainer.CheckpointThenWaits, o => o with { MaxJobRestarts = 1 });
        var job = await Submit(t);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Running);
        for (var i = 0; i < 100 && (await t.EventsAsync(job.Id)).All(e => e.Type != EventTypes.CheckpointSaved); i++) await Task.Delay(50);

        // Restart with no trainer command: the recovered job waits in the queue where we can see it.
        await t.RestartAsync(o => o with { TrainerCommand = [] });
        var requeued = await t.GetJobAsync(job.Id);
        Assert.Equal(JobStatus.Queued, requeued.Status);
        var e = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal(EventTypes.Requeued, e.Type);
        Assert.Contains("server restarted", e.Message);
        var checkpointDir = Path.Combine(JobDir(t, job.Id), "output", "checkpoints", "step-3");
        Assert.Equal(Path.Combine("output", "checkpoints", "step-3"), e.Data!["resume_from"]!.GetValue<string>());

        // Run again: the spec resumes from the checkpoint. Then a second restart exceeds MaxJobRestarts.
        File.Delete(Path.Combine(JobDir(t, job.Id), "started"));
        await t.RestartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.CheckpointThenWaits) });
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        var spec = JsonSerializer.Deserialize<TrainerJobSpec>(await File.ReadAllTextAsync(Path.Combine(JobDir(t, job.Id), "spec.json")), AnnealJson.Options)!;
        Assert.Equal(checkpointDir, spec.ResumeFrom);
        await t.RestartAsync();
        var failed = await t.GetJobAsync(job.Id);
        Assert.Equal(JobStatus.Failed, failed.Status);
        Assert.Equal(ErrorCodes.ServerRestarted, failed.Error!.Code);
    }
}
