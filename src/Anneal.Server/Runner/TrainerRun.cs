// One job's trainer process: writes jobs/<id>/spec.json, starts
//   <TrainerCommand…> trainer run --spec jobs/<id>/spec.json
// turns its stdout JSON lines (TrainerEvent) into job events, metrics, progress and checkpoints,
// keeps its stderr in jobs/<id>/trainer.log, and on exit records the final status together with
// the final event in one transaction (succeeded → fine-tuned model registered; failed → error
// {code, message, log_tail}; cancelled). Exit is noticed at once through WaitForExitAsync.
using System.Data.Common;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Server.Events;
using Anneal.Server.Files;
using Anneal.Server.Jobs;
using Anneal.Server.Metrics;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public sealed class TrainerRun(Db db, ServerOptions options, JobSignals signals, ILogger log, JobRow job, string? gpu, JobLease lease)
{
    const int LogTailLines = 20;
    /// <summary>The message of every sft.failed event; clients show it with data.error: "Training failed (code: message)".</summary>
    public const string FailedHeadline = "Training failed";

    readonly string _id = job.Wire.Id;
    readonly string _jobDir = Path.Combine(db.JobsDir, job.Wire.Id);
    readonly Queue<string> _tail = new();
    readonly Lock _gate = new();
    Process? _process;
    volatile bool _cancelRequested, _shuttingDown, _pauseRequested, _leaseLost;
    CompletedData? _completed;
    JsonObject? _failed, _cancelled;
    // Stops a model download in progress on cancel or shutdown.
    readonly CancellationTokenSource _stop = new();
    string? _failedMessage;

    public Task Completion { get; set; } = Task.CompletedTask;
    public string JobId => _id;
    /// <summary>Where the ranks of a multi-rank launch meet (RankRendezvous.cs): the store and this server's address.</summary>
    public (RankRendezvousStore Store, Func<string> Address)? Rendezvous { get; init; }

    public async Task RunAsync()
    {
        Directory.CreateDirectory(_jobDir);
        // [compute].gpu_count → ranks (RankPlacement.cs); a request this server cannot meet is refused here.
        var placement = RankPlacement.Decide(RankPlacement.RequestedGpus(job), options, RankPlacement.MpirunFound());
        if ((RankPlacement.NodesRefusal(job) ?? placement.Refusal) is { } refusal)
        {
            Finish(JobStatus.Failed, EventTypes.Failed, refusal, new JobError(ErrorCodes.UserConfigError, refusal));
            return;
        }
        WarnAboutRequestedCompute(placement);
        var (spec, error) = await BuildSpecAsync();
        if (spec is null)
        {
            if (_shuttingDown && !_cancelRequested && !_pauseRequested) return; // re-queued on the next start
            if (_pauseRequested && !_cancelRequested)
            {
                Paused();
                return;
            }
            if (_cancelRequested)
            {
                Finish(JobStatus.Cancelled, EventTypes.Cancelled, "Job cancelled by the user before the trainer started.", null);
                return;
            }
            Finish(JobStatus.Failed, EventTypes.Failed, error!.Message, new JobError(error.Code, error.Message));
            return;
        }
        var specPath = Path.Combine(_jobDir, "spec.json");
        var tmp = specPath + ".tmp";
        await File.WriteAllTextAsync(tmp, JsonSerializer.Serialize(spec, AnnealJson.Indented));
        File.Move(tmp, specPath, overwrite: true);

        // Several ranks: mpirun starts them all and ends them all when one dies (RankLaunch.cs).
        var command = placement.Ranks > 1
            ? [.. RankLaunch.MpirunPrefix(placement.Ranks, Environment.UserName == "root"), .. options.TrainerCommand]
            : options.TrainerCommand;
        var psi = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            // The trainer's stdin is a pipe from this process: it reads EOF if the server dies.
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = _jobDir,
        };
        foreach (var a in command.Skip(1)) psi.ArgumentList.Add(a);
        string? rendezvousToken = null;
        if (placement.Ranks > 1)
        {
            psi.Environment[RankLaunch.RunIdVariable] = Guid.NewGuid().ToString("N");
            if (Rendezvous is var (store, address))
            {
                rendezvousToken = store.Open(_id);
                psi.Environment[RankLaunch.RendezvousUrlVariable] = $"{address()}/internal/jobs/{_id}/rendezvous";
                psi.Environment[RankLaunch.RendezvousTokenVariable] = rendezvousToken;
            }
        }
        foreach (var a in new[] { "trainer", "run", "--spec", specPath }) psi.ArgumentList.Add(a);
        psi.Environment["CUDA_VISIBLE_DEVICES"] = gpu ?? "";
        // The trainer stops (after a checkpoint) when this process is gone: see Anneal.Training.ServerWatch.
        psi.Environment[TrainerProtocol.ServerPidVariable] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);

        await using var logFile = new FileStream(Path.Combine(_jobDir, "trainer.log"), FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        await using var logWriter = new StreamWriter(logFile) { AutoFlush = true };
        var process = new Process { StartInfo = psi };
        try { process.Start(); }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            if (rendezvousToken is not null) Rendezvous!.Value.Store.Close(_id, rendezvousToken);
            var message = $"could not start the trainer '{string.Join(' ', command)}': {e.Message}";
            Finish(JobStatus.Failed, EventTypes.Failed, message, new JobError(ErrorCodes.Internal, message));
            return;
        }
        lock (_gate) _process = process;
        using (var conn = db.Connect())
            Db.Exec(conn, null, "UPDATE jobs SET trainer_pid = @pid WHERE id = @id AND lease_owner = @owner AND attempt = @attempt",
                ("@pid", process.Id), ("@id", _id), ("@owner", lease.Owner), ("@attempt", lease.Attempt));
        log.LogInformation("Job {JobId}: trainer pid {Pid} started", _id, process.Id);
        if (_cancelRequested || _shuttingDown || _pauseRequested) Signal();

        var stdout = Task.Run(async () =>
        {
            while (await process.StandardOutput.ReadLineAsync() is { } line) OnStdout(line);
        });
        var stderr = Task.Run(async () =>
        {
            while (await process.StandardError.ReadLineAsync() is { } line)
            {
                await logWriter.WriteLineAsync(line);
                lock (_tail)
                {
                    _tail.Enqueue(line);
                    if (_tail.Count > LogTailLines) _tail.Dequeue();
                }
            }
        });
        await process.WaitForExitAsync();
        if (rendezvousToken is not null) Rendezvous!.Value.Store.Close(_id, rendezvousToken);
        // Grandchildren may hold the pipes open; the trainer itself is gone, so do not wait long.
        await Task.WhenAny(Task.WhenAll(stdout, stderr), Task.Delay(TimeSpan.FromSeconds(5)));
        OnExit(process.ExitCode);
        process.Dispose();
    }

    async Task<(TrainerJobSpec? Spec, JobError? Error)> BuildSpecAsync()
    {
        var (jobSettings, errors) = job.EffectiveSettings();
        if (jobSettings is null)
            return (null, new JobError(ErrorCodes.UserConfigError, "hyperparameters are no longer valid: " + string.Join("; ", errors)));
        var settings = jobSettings.Training;
        string? modelPath, modelError;
        try { (modelPath, modelError) = await ModelPaths.ResolveAsync(db, options, job.Org, job.Wire.Model, OnDownload, _stop.Token); }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            return (null, new JobError(ErrorCodes.Internal, "stopped while downloading the model"));
        }
        if (modelPath is null) return (null, new JobError(ErrorCodes.UserConfigError, modelError!));
        // (blob path, "name.jsonl (file_…)", sha256): the trainer names the user's upload in its messages, never the blob path.
        // A server that lacks the bytes fetches them from the object store first (FileBlobs).
        async Task<(string? Path, string? Name, string? Sha256)> FileOf(string? fileId)
        {
            if (fileId is null) return (null, null, null);
            FileObject? file;
            using (var conn = db.Connect()) file = FileRows.Find(conn, null, job.Org, fileId);
            if (file is null) return (null, null, null);
            return (await FileBlobs.EnsureLocalAsync(db, file.Sha256, _stop.Token), $"{file.Filename} ({file.Id})", file.Sha256);
        }
        string? train, trainName, trainSha, validation, validationName, validationSha;
        try
        {
            (train, trainName, trainSha) = await FileOf(job.Wire.TrainingFileId);
            (validation, validationName, validationSha) = await FileOf(job.Wire.ValidationFileId);
        }
        catch (ObjectStoreException e)
        {
            return (null, new JobError(ErrorCodes.ObjectStore, $"the job's files could not be read from the object store: {e.Message}"));
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            return (null, new JobError(ErrorCodes.Internal, "stopped while fetching the job's files"));
        }
        if (train is null || !File.Exists(train))
            return (null, new JobError(ErrorCodes.UserDataError, $"training file '{job.Wire.TrainingFileId}' was deleted before the job ran"));
        if (job.Wire.ValidationFileId is not null && (validation is null || !File.Exists(validation)))
            return (null, new JobError(ErrorCodes.UserDataError, $"validation file '{job.Wire.ValidationFileId}' was deleted before the job ran"));
        // The newest complete checkpoint on disk: the previous trainer may have saved some the
        // database never heard of (the server was down), and the recorded one may be gone.
        var outputDir = Path.Combine(_jobDir, "output");
        JobOutput.RemovePartials(outputDir);
        // A job that ran on another server: its newest checkpoint comes from the object store.
        try { await JobArtifacts.EnsureNewestCheckpointAsync(db, _id, _stop.Token); }
        catch (ObjectStoreException e)
        {
            return (null, new JobError(ErrorCodes.ObjectStore, $"the job's checkpoint could not be read from the object store: {e.Message}"));
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            return (null, new JobError(ErrorCodes.Internal, "stopped while fetching the job's checkpoint"));
        }
        var resume = JobOutput.NewestCompleteCheckpoint(outputDir)?.Path
            ?? (job.ResumeFrom is { } r && JobOutput.IsCompleteCheckpoint(JobArtifacts.Local(db, r)) ? JobArtifacts.Local(db, r) : null);
        return (new TrainerJobSpec(_id, job.Wire.Model, modelPath, train, validation, outputDir, settings,
            ResumeFrom: resume, Device: options.Gpus.Count > 0 ? "cuda" : "cpu", MergeLora: settings.Mode != TrainingModes.FullFinetune,
            TrainingFileName: trainName, ValidationFileName: validationName, TokenCacheDir: Path.Combine(db.DataDir, "token-cache"),
            TrainingFileSha256: trainSha, ValidationFileSha256: validationSha), null);
    }

    /// <summary>
    /// The TOML's [compute] section arrives as metadata.effective_config.compute = {gpu_type?, gpu_count?, nodes?}.
    /// A job placed as asked gets an info event naming its ranks; one that runs otherwise (a CPU-only
    /// server without --cpu-ranks) a warning: "requested 4 × H100 on 1 node; … runs the job on cpu as one process".
    /// </summary>
    void WarnAboutRequestedCompute(Placement placement)
    {
        if (job.Wire.Metadata?["effective_config"]?["compute"] is not JsonObject compute || compute.Count == 0) return;
        if (placement.Ranks > 1)
        {
            using var c = db.Connect();
            JobEvents.Append(c, null, _id, EventTypes.Log, "info",
                $"[compute] asks for {placement.Requested} devices: the job runs as {placement.Ranks} data-parallel ranks on " +
                (placement.OnGpus ? $"GPUs {gpu} (one per rank)" : "CPU ranks (--cpu-ranks)") + ".",
                new JsonObject { ["requested"] = compute.DeepClone(), ["ranks"] = placement.Ranks, ["device"] = placement.OnGpus ? "cuda" : "cpu", ["gpu"] = gpu });
            signals.EventsAppended.Signal();
            return;
        }
        static string? Text(JsonNode? n) => n is JsonValue v ? v.ToString() : null;
        var gpuType = Text(compute["gpu_type"]) ?? "GPU";
        var gpuCount = Text(compute["gpu_count"]) ?? "1";
        var nodes = Text(compute["nodes"]) ?? "1";
        var requested = $"{gpuCount} × {gpuType} on {nodes} node{(nodes == "1" ? "" : "s")}";
        if (placement.OnGpus) return;   // one GPU, as asked
        var actual = "cpu as one process (anneal serve --cpu-ranks runs one CPU rank per requested device)";
        using var conn = db.Connect();
        JobEvents.Append(conn, null, _id, EventTypes.Log, "warning",
            $"[compute] requested {requested}; this server has no GPUs to place it on and runs the job on {actual}.",
            new JsonObject { ["requested"] = compute.DeepClone(), ["device"] = gpu is null ? "cpu" : "cuda", ["gpu"] = gpu });
        signals.EventsAppended.Signal();
    }

    long _lastDownloadEvent;

    /// <summary>Hub download progress as sft.model.download events, at most one per second and file.</summary>
    void OnDownload(DownloadProgress p)
    {
        var now = Environment.TickCount64;
        if (now - _lastDownloadEvent < 1000 && p.BytesDone != p.BytesTotal) return;
        _lastDownloadEvent = now;
        using var conn = db.Connect();
        JobEvents.Append(conn, null, _id, EventTypes.ModelDownload, "info",
            $"Downloading {p.ModelId}: {p.File} {p.BytesDone}/{p.BytesTotal?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?"} bytes",
            new JsonObject { ["model"] = p.ModelId, ["file"] = p.File, ["bytes_done"] = p.BytesDone, ["bytes_total"] = p.BytesTotal });
        signals.EventsAppended.Signal();
    }

    void OnStdout(string line)
    {
        if (string.IsNullOrWhiteSpace(line)) return;
        TrainerEvent? e = null;
        try { e = JsonSerializer.Deserialize<TrainerEvent>(line, AnnealJson.Options); }
        catch (JsonException) { }
        switch (e?.Type)
        {
            // Final events are recorded with the final status when the process exits.
            case EventTypes.Completed: _completed = EventData.Read<CompletedData>(e.Data); return;
            case EventTypes.Failed: _failed = e.Data ?? []; _failedMessage = e.Message; return;
            case EventTypes.Cancelled: _cancelled = e.Data ?? []; return;
        }
        using var conn = db.Connect();
        // Only this job's row is locked, so trainers on several servers write side by side.
        using var tx = Db.BeginRowLocked(conn);
        if (!JobLeases.Holds(conn, tx, _id, lease)) return; // the job is no longer this run's: write nothing
        if (e is null || string.IsNullOrEmpty(e.Type))
        {
            // Not a protocol line: keep it visible rather than drop it.
            JobEvents.Append(conn, tx, _id, EventTypes.Log, "info", JobOutput.Relative(line.Length > 2000 ? line[..2000] : line, _jobDir));
            tx.Commit();
            signals.EventsAppended.Signal();
            return;
        }
        var data = e.Data;
        switch (e.Type)
        {
            case EventTypes.Progress when EventData.Read<ProgressData>(data) is { } progress:
                RecordProgress(conn, tx, progress);
                break;
            case EventTypes.DataPrepared when data is not null:
                // The trainer rendered and tokenized the files with the job's model: their num_tokens.
                RecordFileTokens(conn, tx, job.Wire.TrainingFileId, Num(data, "file_tokens"));
                RecordFileTokens(conn, tx, job.Wire.ValidationFileId, Num(data, "validation_file_tokens"));
                break;
            case EventTypes.ValidationSummary when EventData.Read<ValidationSummaryData>(data) is { } summary && double.IsFinite(summary.ValLoss):
                MetricsApi.Record(conn, tx, _id, MetricNames.ValLoss, summary.Step, summary.ValLoss);
                break;
            case EventTypes.CheckpointSaved when EventData.Read<CheckpointSavedData>(data) is { Path: not null } saved:
                Db.Exec(conn, tx, """
                    INSERT INTO checkpoints (id, job_id, org, step, path, metrics, created_at)
                    VALUES (@id, @job, @org, @step, @path, @metrics, @t)
                    ON CONFLICT (id) DO UPDATE SET job_id = excluded.job_id, org = excluded.org, step = excluded.step,
                        path = excluded.path, metrics = excluded.metrics, created_at = excluded.created_at
                    """,
                    ("@id", $"{FineTunedId()}:step-{saved.Step}"), ("@job", _id), ("@org", job.Org), ("@step", saved.Step), ("@path", JobArtifacts.Stored(db, saved.Path)),
                    ("@metrics", saved.Metrics?.ToJsonString(AnnealJson.Options)), ("@t", Db.Now()));
                break;
        }
        JobEvents.Append(conn, tx, _id, e.Type, string.IsNullOrEmpty(e.Level) ? "info" : e.Level,
            JobOutput.Relative(e.Message ?? "", _jobDir), JobOutput.Relative(data, _jobDir));
        tx.Commit();
        signals.EventsAppended.Signal();
        if (e.Type == EventTypes.CheckpointSaved && EventData.Read<CheckpointSavedData>(data) is { Path: { } checkpoint })
            PublishCheckpoint(checkpoint);
    }

    // Checkpoints go into the object store one after another, beside the training: the stdout
    // reader does not wait for them (a trainer blocked on a full pipe would stall), success does.
    Task _publishing = Task.CompletedTask;

    void PublishCheckpoint(string folder)
    {
        if (db.Objects.IsDataFolder) return;
        lock (_gate)
            _publishing = _publishing.ContinueWith(async _ =>
            {
                try { await JobArtifacts.PublishAsync(db, folder, CancellationToken.None); }
                // IOException: the trainer pruned or replaced a file of the folder meanwhile.
                catch (Exception ex) when (ex is ObjectStoreException or IOException)
                {
                    log.LogWarning(ex, "Job {JobId}: checkpoint {Folder} was not stored", _id, folder);
                    using var conn = db.Connect();
                    JobEvents.Append(conn, null, _id, EventTypes.Log, "warning",
                        $"Checkpoint {JobOutput.Relative(folder, _jobDir)} could not be put into the object store, so only this server can resume from it: {ex.Message}");
                    signals.EventsAppended.Signal();
                }
            }, TaskScheduler.Default).Unwrap();
    }

    /// <summary>Waits for the checkpoints being put into the object store.</summary>
    void WaitForPublishing()
    {
        Task pending;
        lock (_gate) pending = _publishing;
        pending.GetAwaiter().GetResult();
    }

    void RecordProgress(DbConnection conn, DbTransaction tx, ProgressData p)
    {
        var progress = new JobProgress(p.Step, p.TotalSteps, p.Epoch, Finite(p.TokensPerSecond), Finite(p.EtaSeconds));
        Db.Exec(conn, tx, "UPDATE jobs SET progress = @p, trained_tokens = COALESCE(@tt, trained_tokens) WHERE id = @id",
            ("@p", Db.ToJson(progress)), ("@tt", p.TrainedTokens), ("@id", _id));
        foreach (var (value, name) in new[] { ((double?)p.Loss, MetricNames.TrainLoss), (p.Lr, MetricNames.TrainLr), (p.GradNorm, MetricNames.TrainGradNorm), (p.TokensPerSecond, MetricNames.TrainTokensPerSecond) })
            if (Finite(value) is { } v) MetricsApi.Record(conn, tx, _id, name, p.Step, v);
    }

    static double? Finite(double? v) => v is { } d && double.IsFinite(d) ? d : null;

    /// <summary>A file's num_tokens, from the first job that tokenized it (Qwen3 models share one tokenizer).</summary>
    void RecordFileTokens(DbConnection conn, DbTransaction tx, string? fileId, double? tokens)
    {
        if (fileId is null || tokens is null) return;
        Db.Exec(conn, tx, "UPDATE files SET num_tokens = @t WHERE id = @id AND org = @org AND num_tokens IS NULL",
            ("@t", (long)tokens.Value), ("@id", fileId), ("@org", job.Org));
    }

    static double? Num(JsonObject data, string key) =>
        data[key] is JsonValue v && v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d : null;

    string FineTunedId() => FineTunedId(db, job);

    /// <summary>ft:&lt;base&gt;:&lt;job&gt; (LoRA), fft: (full), qft: (QLoRA); base = the registry model under the job's model.</summary>
    internal static string FineTunedId(Db db, JobRow job)
    {
        var prefix = job.Mode switch { TrainingModes.Lora => "ft", TrainingModes.Qlora => "qft", _ => "fft" };
        using var conn = db.Connect();
        return $"{prefix}:{JobCreation.RegistryBase(conn, job.Org, job.Wire.Model) ?? job.Wire.Model}:{job.Wire.Id}";
    }

    /// <summary>
    /// A run on a worker host (Workers/WorkersApi): its trainer's stdout lines arrive over HTTP
    /// and go through the same recording as a local trainer's, under the worker's lease.
    /// </summary>
    internal void RecordRemoteLine(string line)
    {
        OnStdout(line);
        WaitForPublishing();
    }

    /// <summary>The worker's trainer exited: its stderr tail and exit code decide the final status, as for a local trainer.</summary>
    internal void RecordRemoteExit(int exitCode, IEnumerable<string> logTail)
    {
        lock (_tail)
            foreach (var line in logTail.TakeLast(LogTailLines)) _tail.Enqueue(line);
        OnExit(exitCode);
    }

    void OnExit(int exitCode)
    {
        // Whatever the outcome, the checkpoints the trainer reported are in the object store first:
        // another server may resume the job as soon as its status changes.
        WaitForPublishing();
        if (_shuttingDown && !_cancelRequested && !_pauseRequested)
        {
            log.LogInformation("Job {JobId}: trainer stopped for server shutdown (exit {Code}); it is re-queued on the next start", _id, exitCode);
            return;
        }
        List<string> tail;
        lock (_tail) tail = [.. _tail];
        if (exitCode == 0 && _completed is not null)
        {
            Succeed(_completed);
            return;
        }
        if (_cancelRequested)
        {
            Finish(JobStatus.Cancelled, EventTypes.Cancelled, "Job cancelled by the user; the trainer stopped.", null, _cancelled);
            return;
        }
        if (_pauseRequested)
        {
            Paused();
            return;
        }
        if (_failed is not null)
        {
            var err = _failed["error"] as JsonObject;
            var code = err?["code"]?.GetValue<string>() ?? ErrorCodes.TrainerCrashed;
            var message = err?["message"]?.GetValue<string>() ?? _failedMessage ?? $"the trainer failed (exit code {exitCode})";
            Finish(JobStatus.Failed, EventTypes.Failed, message, new JobError(code, message, tail), _failed);
            return;
        }
        // Several ranks: mpirun's exit status is the dead rank's; its notice in the log names the rank.
        var why = MpirunExit.DeadRank(tail) is { } rank ? $"{rank}; mpirun ended the other ranks (exit code {exitCode})" : exitCode switch
        {
            0 => "the trainer exited with code 0 without reporting sft.completed",
            137 => "the trainer was killed (exit code 137, SIGKILL; often the out-of-memory killer)",
            > 128 => $"the trainer was killed by signal {exitCode - 128} (exit code {exitCode})",
            _ => $"the trainer exited with code {exitCode} without reporting an error",
        };
        Finish(JobStatus.Failed, EventTypes.Failed, why, new JobError(ErrorCodes.TrainerCrashed, why + "; see log_tail and GET …/logs", tail));
    }

    void Succeed(CompletedData completed)
    {
        try
        {
            if (RecordSucceeded(db, job, completed, null, lease)) signals.EventsAppended.Signal();
        }
        catch (ObjectStoreException e)
        {
            var message = $"the fine-tuned model could not be put into the object store: {e.Message}";
            Finish(JobStatus.Failed, EventTypes.Failed, message, new JobError(ErrorCodes.ObjectStore, message));
        }
    }

    /// <summary>
    /// running → succeeded with the fine-tuned model registered and sft.completed, in one transaction;
    /// false when the job was no longer running (or no longer <paramref name="lease"/>'s). Also used
    /// by recovery, which holds the job already, to adopt a finished final/.
    /// </summary>
    internal static bool RecordSucceeded(Db db, JobRow job, CompletedData completed, string? note, JobLease? lease)
    {
        var id = job.Wire.Id;
        var ftId = FineTunedId(db, job);
        var output = Path.Combine(db.JobsDir, id, "output");
        var merged = completed.MergedPath;
        var final = completed.FinalPath ?? Path.Combine(output, "final");
        // LoRA: serve the merged full model when the trainer wrote one (spec.MergeLora).
        var path = job.Mode == TrainingModes.FullFinetune ? final : merged ?? Path.Combine(final, "merged");
        // Succeeded means the model is in the object store (final/ as one unit, merged/ within it).
        JobArtifacts.PublishAsync(db, final, CancellationToken.None).GetAwaiter().GetResult();
        var (trained, weightsStep) = (completed.TrainedTokens, completed.WeightsStep);
        using var conn = db.Connect();
        var baseModel = JobCreation.RegistryBase(conn, job.Org, job.Wire.Model) ?? job.Wire.Model;
        using var tx = Db.Begin(conn);
        if (lease is not null && !JobLeases.Holds(conn, tx, id, lease)) return false;
        if (!JobRows.Transition(conn, tx, id, [JobStatus.Running], JobStatus.Succeeded)) return false;
        Db.Exec(conn, tx, "UPDATE jobs SET fine_tuned_model = @ft, trained_tokens = COALESCE(@tt, trained_tokens), weights_step = @ws WHERE id = @id",
            ("@ft", ftId), ("@tt", trained), ("@ws", weightsStep), ("@id", id));
        Db.Exec(conn, tx, """
            INSERT INTO fine_tuned_models (id, org, base_model, job_id, path, status, created_at)
            VALUES (@id, @org, @base, @job, @path, 'ready', @t)
            ON CONFLICT (id) DO UPDATE SET org = excluded.org, base_model = excluded.base_model, job_id = excluded.job_id,
                path = excluded.path, status = excluded.status, created_at = excluded.created_at
            """, ("@id", ftId), ("@org", job.Org), ("@base", baseModel), ("@job", id), ("@path", JobArtifacts.Stored(db, path)), ("@t", Db.Now()));
        var data = JobOutput.Relative(EventData.ToJson(completed), Path.Combine(db.JobsDir, id))!;
        data["fine_tuned_model"] = ftId;
        JobEvents.Append(conn, tx, id, EventTypes.Completed, "info", $"Training completed: {ftId}{note}", data);
        tx.Commit();
        return true;
    }

    void Finish(string status, string eventType, string message, JobError? error, JsonObject? data = null)
    {
        string? logLine = null;
        if (status == JobStatus.Failed && error is not null)
        {
            // The job's log ends with why it failed, also when the trainer never ran or wrote nothing.
            var line = logLine = $"{DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture)} server: {FailedHeadline}: {error.Code}: {error.Message}";
            error = error with { LogTail = [.. (error.LogTail ?? []).Append(line).TakeLast(LogTailLines)] };
        }
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        if (!JobLeases.Holds(conn, tx, _id, lease)) return;
        if (!JobRows.Transition(conn, tx, _id, [JobStatus.Running], status)) return;
        if (error is not null) Db.Exec(conn, tx, "UPDATE jobs SET error = @e WHERE id = @id", ("@e", Db.ToJson(error)), ("@id", _id));
        var eventData = data is null ? [] : (JsonObject)data.DeepClone();
        if (error is not null) eventData["error"] = JsonSerializer.SerializeToNode(new JobError(error.Code, error.Message), AnnealJson.Options);
        // A failure's details are in data.error (and the job's error); the event says it once, as a headline.
        JobEvents.Append(conn, tx, _id, eventType, status == JobStatus.Failed ? "error" : "info",
            status == JobStatus.Failed ? FailedHeadline : message, eventData);
        tx.Commit();
        if (logLine is not null) AppendLog(logLine);
        signals.EventsAppended.Signal();
    }

    void AppendLog(string line)
    {
        try
        {
            Directory.CreateDirectory(_jobDir);
            using var stream = new FileStream(Path.Combine(_jobDir, "trainer.log"), FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            using var writer = new StreamWriter(stream);
            writer.WriteLine(line);
        }
        catch (IOException e) { log.LogWarning(e, "Job {JobId}: could not append to trainer.log", _id); }
        catch (UnauthorizedAccessException e) { log.LogWarning(e, "Job {JobId}: could not append to trainer.log", _id); }
    }

    /// <summary>running → paused: the trainer has stopped and released its device; resume continues from the latest checkpoint.</summary>
    void Paused()
    {
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        var checkpoint = Db.Query(conn, tx, "SELECT step, path FROM checkpoints WHERE job_id = @id ORDER BY step DESC",
                r => (Step: r.GetInt64(0), Path: r.GetString(1)), ("@id", _id))
            .FirstOrDefault(c => Directory.Exists(JobArtifacts.Local(db, c.Path)));
        if (!JobLeases.Holds(conn, tx, _id, lease)) return;
        if (!JobRows.Transition(conn, tx, _id, [JobStatus.Running], JobStatus.Paused)) return;
        Db.Exec(conn, tx, "UPDATE jobs SET resume_from = COALESCE(@r, resume_from), trainer_pid = NULL WHERE id = @id", ("@r", checkpoint.Path), ("@id", _id));
        var from = checkpoint.Path is null ? "its previous starting point" : $"its checkpoint at step {checkpoint.Step}";
        JobEvents.Append(conn, tx, _id, EventTypes.Paused, "info",
            $"Job paused; the trainer stopped and released its device. Resume continues from {from}.",
            new JsonObject { ["resume_from"] = checkpoint.Path is null ? null : JobOutput.Relative(JobArtifacts.Local(db, checkpoint.Path), _jobDir), ["resume_step"] = checkpoint.Path is null ? null : checkpoint.Step });
        tx.Commit();
        signals.EventsAppended.Signal();
    }

    /// <summary>Records a runner bug as an internal failure instead of leaving the job running.</summary>
    public void FailInternal(Exception e) =>
        Finish(JobStatus.Failed, EventTypes.Failed, $"internal error while running the trainer: {e.Message}", new JobError(ErrorCodes.Internal, e.Message));

    public void Cancel() { _cancelRequested = true; _stop.Cancel(); Signal(); }

    // Pause and shutdown keep the work done: the trainer saves a checkpoint before it stops.
    public void Pause() { _pauseRequested = true; _stop.Cancel(); Signal(); }

    public void Shutdown() { _shuttingDown = true; _stop.Cancel(); Signal(); }

    /// <summary>
    /// The job is no longer this run's (recovered by another server after this one stalled, or
    /// cancelled through another server): stop the trainer as for a cancel; every write is fenced.
    /// </summary>
    public void LoseLease()
    {
        if (_leaseLost) return;
        _leaseLost = true;
        log.LogWarning("Job {JobId}: lease lost (attempt {Attempt}); stopping its trainer without recording anything", _id, lease.Attempt);
        Cancel();
    }

    public JobLease Lease => lease;

    /// <summary>
    /// SIGTERM to cancel, or SIGUSR1 to checkpoint and stop (pause, shutdown), honoured at the next
    /// optimizer step; SIGKILL of the whole tree after the grace period.
    /// </summary>
    void Signal()
    {
        Process? p;
        lock (_gate) p = _process;
        if (p is null) return;
        try
        {
            if (p.HasExited) return;
            Native.Kill(p.Id, _cancelRequested ? TrainerProtocol.CancelSignal : TrainerProtocol.CheckpointAndStopSignal);
        }
        catch (InvalidOperationException) { return; }
        _ = Task.Run(async () =>
        {
            await Task.Delay(options.CancelGracePeriod);
            try
            {
                if (!p.HasExited)
                {
                    log.LogWarning("Job {JobId}: trainer did not stop within {Grace}; killing it", _id, options.CancelGracePeriod);
                    p.Kill(entireProcessTree: true);
                }
            }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { }
        });
    }
}
