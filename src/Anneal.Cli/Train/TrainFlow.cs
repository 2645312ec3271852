// The spec's train flow (synth-sft-training.md §2): load the TOML, resolve and validate the
// dataset locally, upload it to /api/learning/files, wait until the server marks it ready,
// create the job from the TOML, start it and follow it to a terminal state. `anneal train` and
// `anneal demo` both run this code. Any config or dataset problem stops it before the first
// request (exit 2, nothing uploaded).
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Cli.Env;
using Anneal.Cli.Http;
using Anneal.Core.Config;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Models;
using Anneal.Core.Training;

namespace Anneal.Cli.Train;

/// <summary>What `anneal train` was asked to do (its flags, unresolved).</summary>
public sealed record TrainRequest
{
    public string Type { get; init; } = "sft";
    public required string ConfigPath { get; init; }
    public string? DatasetPath { get; init; }
    public string? ValidationPath { get; init; }
    public string? Backend { get; init; }
    public string? Model { get; init; }
    public int? Examples { get; init; }
    public bool NoPoll { get; init; }
    public IReadOnlyList<string> EnvFiles { get; init; } = [];
    public double? PollTimeoutSeconds { get; init; }
    public double PollIntervalSeconds { get; init; } = 2;
    public bool DryRun { get; init; }
    public string? Suffix { get; init; }
    /// <summary>Print the final job as JSON on stdout.</summary>
    public bool Json { get; init; }
}

/// <summary>How the flow ended: the exit code, and the job when one was created or found.</summary>
public sealed record TrainOutcome(int ExitCode, JobObject? Job);

public static class TrainFlow
{
    public const int MaxErrorsShown = 20;

    /// <summary>A dataset (or the first N records of one) ready to upload.</summary>
    sealed record DatasetUpload(string Path, string FileName, byte[]? Subset, string Sha256, long Bytes, int NumExamples)
    {
        public Stream Open() => Subset is { } bytes ? new MemoryStream(bytes, writable: false) : File.OpenRead(Path);
    }

    public static async Task<TrainOutcome> RunAsync(TrainRequest req, CliContext ctx, CancellationToken ct)
    {
        var err = ctx.Error;
        if (!string.Equals(req.Type, "sft", StringComparison.OrdinalIgnoreCase))
            return Usage(ctx, $"--type {req.Type}: only 'sft' is supported by anneal (offline supervised fine-tuning)");
        if (req.Examples is <= 0) return Usage(ctx, $"--examples {req.Examples}: expected a positive number of records");
        if (req.PollIntervalSeconds <= 0) return Usage(ctx, $"--poll-interval {req.PollIntervalSeconds}: expected a positive number of seconds");
        if (req.PollTimeoutSeconds is <= 0) return Usage(ctx, $"--poll-timeout {req.PollTimeoutSeconds}: expected a positive number of seconds");

        var (env, envErrors) = CliEnvironment.Load(ctx, req.EnvFiles);
        if (env is null) return Usage(ctx, envErrors);

        // 1. Config.
        var configPath = ctx.FullPath(req.ConfigPath);
        if (Directory.Exists(configPath)) return Usage(ctx, $"--config {req.ConfigPath}: {configPath} is a directory; expected a TOML file");
        if (!File.Exists(configPath)) return Usage(ctx, $"--config {req.ConfigPath}: file not found ({configPath})");
        var (config, configErrors) = TrainingConfigLoader.Load(configPath);
        if (config is null || configErrors.Count > 0)
            return Usage(ctx, [$"config {configPath} is invalid:", .. configErrors.Select(e => "  " + e)]);
        var configDir = Path.GetDirectoryName(configPath)!;
        var model = req.Model ?? config.Model;
        // Keys accepted for compatibility that do nothing here: said once, before anything is sent.
        foreach (var w in config.Warnings) err.WriteLine($"warning: {w}");

        // 2. Dataset(s): resolve, take the first N records, validate locally.
        var datasetGiven = req.DatasetPath ?? config.DataPath;
        if (datasetGiven is null)
            return Usage(ctx, $"no dataset: pass --dataset PATH or set [job].data in {configPath}");
        var (datasetPath, datasetError) = DatasetPaths.Resolve(datasetGiven, ctx.WorkingDirectory, configDir, req.DatasetPath is null ? "[job].data" : "--dataset");
        if (datasetPath is null) return Usage(ctx, datasetError!);
        string? validationPath = null;
        var validationGiven = req.ValidationPath ?? config.ValidationPath;
        if (validationGiven is not null)
        {
            (validationPath, var validationError) = DatasetPaths.Resolve(validationGiven, ctx.WorkingDirectory, configDir,
                req.ValidationPath is null ? "[data].validation_path" : "--validation");
            if (validationPath is null) return Usage(ctx, validationError!);
        }

        var validationOptions = new DatasetValidationOptions(MaxErrorsShown, ModelRegistry.IsVision(model),
            config.MaxImagesPerMessage ?? Math.Max(1, ModelRegistry.Find(model)?.MaxImagesPerMessage ?? 1),
            LocalImagePaths: true);   // packed into the upload below (LocalImages)
        var training = Prepare(datasetPath, req.Examples, validationOptions, ctx, out var trainingProblem);
        if (training is null) return new TrainOutcome(trainingProblem, null);
        DatasetUpload? validation = null;
        if (validationPath is not null)
        {
            validation = Prepare(validationPath, null, validationOptions, ctx, out var validationProblem);
            if (validation is null) return new TrainOutcome(validationProblem, null);
        }

        // 3. The job payload, as it will be sent (file ids filled in after the upload).
        var metadata = new JsonObject { ["effective_config"] = config.EffectiveConfig.DeepClone() };
        if (config.Tags.Count > 0) metadata["tags"] = new JsonObject(config.Tags.Select(t => KeyValuePair.Create(t.Key, (JsonNode?)t.Value)));
        CreateJobRequest Payload(string trainingFileId, string? validationFileId) => new(model, TrainingType.SftOffline,
            trainingFileId, validationFileId, (JsonObject)config.Hyperparameters.DeepClone(), (JsonObject)metadata.DeepClone(), req.Suffix);

        var backend = env.BackendBaseUrl(req.Backend);
        if (CliEnvironment.CheckBackendUrl(backend) is { } backendError) return Usage(ctx, backendError);

        var settings = config.Settings.Training;
        if (req.DryRun)
        {
            if (ModelPreflight.CheckLocal(model, settings) is { Count: > 0 } modelErrors)
                return ModelProblems(ctx, configPath, modelErrors, "(checked against the built-in model list; nothing was sent)");
            var plan = new JsonObject
            {
                ["backend"] = backend,
                ["uploads"] = new JsonArray(new[] { training, validation }.OfType<DatasetUpload>().Select(u => (JsonNode)new JsonObject
                {
                    ["path"] = u.Path, ["filename"] = u.FileName, ["purpose"] = FilePurpose.FineTune,
                    ["bytes"] = u.Bytes, ["sha256"] = u.Sha256, ["num_examples"] = u.NumExamples,
                }).ToArray()),
                ["create_job"] = JsonSerializer.SerializeToNode(Payload(
                    $"<id of the uploaded file sha256:{training.Sha256[..12]}>",
                    validation is null ? null : $"<id of the uploaded file sha256:{validation.Sha256[..12]}>"), AnnealJson.Options),
            };
            // Vision mode's adjustments, as the trainer will make them (and report as events).
            var adjustments = settings is null ? [] : VisionMode.Adjust(settings, model).Adjustments;
            if (adjustments.Count > 0) plan["vision_mode"] = new JsonArray(adjustments.Select(a => (JsonNode)a).ToArray());
            ctx.Out.WriteLine(plan.ToJsonString(DisplayJson));
            foreach (var a in adjustments) err.WriteLine(a);
            err.WriteLine("Dry run: nothing was uploaded and no job was created.");
            return new TrainOutcome(ExitCodes.Ok, null);
        }

        var apiKey = env.ApiKey;
        if (apiKey is null)
            return Usage(ctx,
                $"{CliEnvironment.ApiKeyVariable} is not set (looked in the environment, .env in {ctx.WorkingDirectory}{(req.EnvFiles.Count > 0 ? " and --env-file" : "")}).",
                "  Run `anneal setup` to create a key for a local server and write it to .env,",
                $"  or `anneal setup --api-key KEY --backend URL` for a remote one, or export {CliEnvironment.ApiKeyVariable}.");

        using var client = new AnnealClient(backend, apiKey);
        var submissions = new Submissions(ctx.WorkingDirectory);
        var submissionKey = SubmissionKey(backend, training, validation, Payload("", null));
        try
        {
            // Re-run of an earlier submission: report (or follow) that job rather than a second one.
            if (submissions.Find(submissionKey) is { } previous)
            {
                var existing = await TryGetJobAsync(client, previous.JobId, ct);
                if (existing is null) submissions.Remove(submissionKey);
                else if (existing.Status is JobStatus.Failed or JobStatus.Cancelled)
                    // A failed or cancelled job is not the answer to a re-run: try again (the server
                    // keeps one copy of the dataset, so nothing is stored twice).
                    err.WriteLine($"previous job {existing.Id} {existing.Status}; submitting a new job.");
                else if (req.NoPoll || !JobStatus.IsTerminal(existing.Status))
                {
                    err.WriteLine($"This dataset and config were already submitted as job {existing.Id} (status: {existing.Status}); not uploading again.");
                    if (req.NoPoll) return Report(ctx, existing, req.Json, submitted: true);
                    return await FollowAndReportAsync(ctx, client, existing.Id, req, config.PollSeconds, ct);
                }
            }

            if (await ModelPreflight.CheckRemoteAsync(client, model, settings, ct) is { Count: > 0 } modelErrors)
                return ModelProblems(ctx, configPath, modelErrors, "nothing was uploaded");

            err.WriteLine($"Uploading {training.FileName} ({training.NumExamples} examples, {training.Bytes:N0} bytes) to {backend} ...");
            var trainingFile = await UploadAndWaitAsync(client, training, req.PollIntervalSeconds, ctx, ct);
            if (trainingFile is not { Status: FileStatus.Ready }) return new TrainOutcome(ExitCodes.Usage, null);
            FileObject? validationFile = null;
            if (validation is not null)
            {
                err.WriteLine($"Uploading validation set {validation.FileName} ({validation.NumExamples} examples) ...");
                validationFile = await UploadAndWaitAsync(client, validation, req.PollIntervalSeconds, ctx, ct);
                if (validationFile is not { Status: FileStatus.Ready }) return new TrainOutcome(ExitCodes.Usage, null);
            }

            // The Idempotency-Key is derived from the dataset and config, so the server recognises a
            // re-run from any folder or machine: it answers with the job it already has.
            var payload = Payload(trainingFile.Id, validationFile?.Id);
            var key = IdempotencyKey(payload);
            var job = await client.CreateJobAsync(payload, key, ct);
            // A failed or cancelled job is not the answer to a re-run: a new job, keyed after it.
            for (var retries = 0; job.Status is JobStatus.Failed or JobStatus.Cancelled && retries < 20; retries++)
            {
                err.WriteLine($"previous job {job.Id} {job.Status}; submitting a new job.");
                key = $"{key[..Math.Min(key.Length, 100)]}:after:{job.Id}";
                job = await client.CreateJobAsync(payload, key, ct);
            }
            submissions.Save(submissionKey, new Submission(job.Id, trainingFile.Id, validationFile?.Id, backend, DateTimeOffset.UtcNow));
            if (job.Status != JobStatus.Created)
            {
                err.WriteLine($"This dataset and config were already submitted as job {job.Id} (status: {job.Status}); not starting another.");
                if (req.NoPoll || JobStatus.IsTerminal(job.Status)) return Report(ctx, job, req.Json, submitted: true);
                return await FollowAndReportAsync(ctx, client, job.Id, req, config.PollSeconds, ct);
            }
            job = await client.StartJobAsync(job.Id, ct);
            err.WriteLine($"Created and started job {job.Id} (model {job.Model}, status {job.Status}).");
            if (req.NoPoll) return Report(ctx, job, req.Json, submitted: true);
            return await FollowAndReportAsync(ctx, client, job.Id, req, config.PollSeconds, ct);
        }
        catch (Exception e) when (ApiErrors.IsApiError(e))
        {
            return new TrainOutcome(ApiErrors.Report(ctx, e, TomlKeys.Describe, env.SourceOf(CliEnvironment.ApiKeyVariable)), null);
        }
    }

    /// <summary>Indented JSON for people: `<` and `>` stay readable (never embedded in HTML).</summary>
    static readonly JsonSerializerOptions DisplayJson = new(AnnealJson.Indented)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    static TrainOutcome ModelProblems(CliContext ctx, string configPath, List<ErrorItem> errors, string note)
    {
        ctx.Error.WriteLine($"error: the job would be rejected ({note}):");
        foreach (var e in errors) ctx.Error.WriteLine($"  {configPath}: {TomlKeys.Describe(e)}");
        return new TrainOutcome(ExitCodes.Usage, null);
    }

    static async Task<TrainOutcome> FollowAndReportAsync(CliContext ctx, AnnealClient client, string jobId, TrainRequest req, double? configPollSeconds, CancellationToken ct)
    {
        var timeoutSeconds = req.PollTimeoutSeconds ?? configPollSeconds;
        var follower = new JobFollower(ctx, client, TimeSpan.FromSeconds(req.PollIntervalSeconds),
            timeoutSeconds is { } s ? TimeSpan.FromSeconds(s) : null)
        {
            // With --json, stdout holds only the final job object; events go to stderr.
            EventWriter = req.Json ? ctx.Error : null,
        };
        FollowResult result;
        try
        {
            result = await follower.FollowAsync(jobId, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            ctx.Error.WriteLine($"Interrupted. Stopped following job {jobId}; it continues on the server. Check it with `anneal jobs get {jobId}`,");
            ctx.Error.WriteLine($"or cancel it with `anneal jobs cancel {jobId}`.");
            return new TrainOutcome(ExitCodes.Interrupted, null);
        }
        if (result.TimedOut)
        {
            ctx.Error.WriteLine($"error: timed out after {timeoutSeconds} s waiting for job {jobId} (status: {result.Job?.Status ?? "unknown"}).");
            ctx.Error.WriteLine($"  The job continues on the server; check it with `anneal jobs get {jobId}`.");
            if (req.Json && result.Job is { } last) ctx.Out.WriteLine(JsonSerializer.Serialize(last, AnnealJson.Indented));
            return new TrainOutcome(ExitCodes.PollTimeout, result.Job);
        }
        return Report(ctx, result.Job!, req.Json, submitted: false);
    }

    /// <summary>Final lines: status, job id, fine_tuned_model or the error.</summary>
    public static TrainOutcome Report(CliContext ctx, JobObject job, bool json, bool submitted)
    {
        if (json) ctx.Out.WriteLine(JsonSerializer.Serialize(job, AnnealJson.Indented));
        else
        {
            ctx.Out.WriteLine($"job_id: {job.Id}");
            ctx.Out.WriteLine($"status: {job.Status}");
            if (job.Progress is { TotalSteps: > 0 } p) ctx.Out.WriteLine($"progress: step {p.Step}/{p.TotalSteps}");
            if (job.FineTunedModel is { } ftm) ctx.Out.WriteLine($"fine_tuned_model: {ftm}");
            if (job.TrainedTokens is { } tokens) ctx.Out.WriteLine($"trained_tokens: {tokens}");
            if (job.Error is { } e) ctx.Out.WriteLine($"error: {e.Code}: {e.Message}");
        }
        if (submitted && !JobStatus.IsTerminal(job.Status))
            ctx.Error.WriteLine($"Follow it with `anneal jobs events {job.Id}` or `anneal jobs get {job.Id}`.");
        var code = job.Status switch
        {
            JobStatus.Succeeded => ExitCodes.Ok,
            JobStatus.Failed or JobStatus.Cancelled => ExitCodes.Failed,
            _ => submitted ? ExitCodes.Ok : ExitCodes.Failed,
        };
        return new TrainOutcome(code, job);
    }

    static DatasetUpload? Prepare(string path, int? examples, DatasetValidationOptions options, CliContext ctx, out int exitCode)
    {
        exitCode = ExitCodes.Usage;
        byte[]? subset = null;
        if (examples is { } n)
        {
            subset = FirstRecords(path, n, out var found);
            if (found < n) ctx.Error.WriteLine($"note: --examples {n}: {path} has only {found} records; using all of them");
        }
        DatasetReport report;
        using (Stream stream = subset is null ? File.OpenRead(path) : new MemoryStream(subset, writable: false))
            report = DatasetValidator.Validate(stream, options);
        if (!report.IsValid)
        {
            ctx.Error.WriteLine(report.TotalErrors == 0
                ? $"error: dataset {path} has no records"
                : $"error: dataset {path} is invalid ({report.TotalErrors} error{(report.TotalErrors == 1 ? "" : "s")}); nothing was uploaded:");
            foreach (var e in report.Errors.Take(MaxErrorsShown)) ctx.Error.WriteLine($"  {e}");
            if (report.TotalErrors > Math.Min(report.Errors.Count, MaxErrorsShown))
                ctx.Error.WriteLine($"  ... {report.TotalErrors} errors in total, first {Math.Min(report.Errors.Count, MaxErrorsShown)} shown");
            ctx.Error.WriteLine("  Each line must be a JSON object with messages[] of at least 2 messages (roles system/user/assistant/tool), at least one from the assistant.");
            return null;
        }
        if (options.Vision && report.ExamplesWithImages > 0)
        {
            // Local image files go into the upload itself (as data: URIs).
            var problems = new List<ErrorItem>();
            byte[]? inlined;
            int packed;
            using (Stream stream = subset is null ? File.OpenRead(path) : new MemoryStream(subset, writable: false))
                inlined = LocalImages.Inline(stream, Path.GetDirectoryName(Path.GetFullPath(path))!, problems, out packed);
            if (problems.Count > 0)
            {
                ctx.Error.WriteLine($"error: dataset {path}: {problems.Count} image file problem{(problems.Count == 1 ? "" : "s")}; nothing was uploaded:");
                foreach (var e in problems.Take(MaxErrorsShown)) ctx.Error.WriteLine($"  {e}");
                return null;
            }
            if (inlined is not null)
            {
                subset = inlined;
                ctx.Error.WriteLine($"note: packed {packed} local image file{(packed == 1 ? "" : "s")} into the upload");
            }
        }
        string sha;
        long bytes;
        if (subset is not null)
        {
            sha = Convert.ToHexStringLower(SHA256.HashData(subset));
            bytes = subset.Length;
        }
        else
        {
            using var s = File.OpenRead(path);
            sha = Convert.ToHexStringLower(SHA256.HashData(s));
            bytes = s.Length;
        }
        var fileName = Path.GetFileName(path);
        if (examples is { } count) fileName = $"{Path.GetFileNameWithoutExtension(path)}.first{count}{Path.GetExtension(path)}";
        exitCode = ExitCodes.Ok;
        return new DatasetUpload(path, fileName, subset, sha, bytes, report.NumExamples);
    }

    /// <summary>The first N non-blank lines of a JSONL file (a UTF-8 BOM is dropped), with their line ends.</summary>
    public static byte[] FirstRecords(string path, int n, out int found)
    {
        found = 0;
        var sb = new StringBuilder();
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        while (found < n && reader.ReadLine() is { } line)
        {
            sb.Append(line).Append('\n');
            if (line.Trim().Length > 0) found++;
        }
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>Uploads and waits for validation; null (after printing why) when the server refused the file.</summary>
    static async Task<FileObject?> UploadAndWaitAsync(AnnealClient client, DatasetUpload upload, double pollSeconds, CliContext ctx, CancellationToken ct)
    {
        FileObject file;
        await using (var content = upload.Open())
        {
            try
            {
                file = await client.UploadFileAsync(content, upload.FileName, FilePurpose.FineTune, ct);
            }
            catch (ApiException e) when (e.Status == System.Net.HttpStatusCode.RequestEntityTooLarge)
            {
                ApiErrors.ReportUpload(ctx, e, upload.FileName, upload.Bytes);
                return null;
            }
        }
        var delay = TimeSpan.FromSeconds(Math.Min(pollSeconds, 1));
        while (file.Status == FileStatus.Processing)
        {
            await Task.Delay(delay, ct);
            file = await client.GetFileAsync(file.Id, ct);
        }
        if (file.Status == FileStatus.Failed)
        {
            ctx.Error.WriteLine($"error: the server rejected {upload.FileName} (file {file.Id}):");
            foreach (var e in file.Errors ?? []) ctx.Error.WriteLine($"  {e}");
            if (file.TotalErrors is { } total && total > (file.Errors?.Count ?? 0))
                ctx.Error.WriteLine($"  ... {total} errors in total, first {file.Errors?.Count ?? 0} shown");
        }
        else ctx.Error.WriteLine($"File {file.Id} is {file.Status}{(file.NumExamples is { } n ? $" ({n} examples{(file.NumTokens is { } t ? $", {t:N0} tokens" : "")})" : "")}.");
        return file;
    }

    static async Task<JobObject?> TryGetJobAsync(AnnealClient client, string jobId, CancellationToken ct)
    {
        try
        {
            return await client.GetJobAsync(jobId, ct);
        }
        catch (ApiException e) when (e.Status == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>sha256 over the backend, both datasets' hashes and the payload without file ids.</summary>
    /// <summary>
    /// "anneal-train-&lt;sha256 of the job payload&gt;": the same on any machine for the same config and
    /// datasets (the server gives the same bytes the same file id), and a new key once a dataset was
    /// deleted and uploaded again (a new file id), so a key is never reused for another body.
    /// </summary>
    static string IdempotencyKey(CreateJobRequest payload) =>
        "anneal-train-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(payload, AnnealJson.Options))));

    static string SubmissionKey(string backend, DatasetUpload training, DatasetUpload? validation, CreateJobRequest payload)
    {
        var text = string.Join("\n", backend, training.Sha256, validation?.Sha256 ?? "-", JsonSerializer.Serialize(payload, AnnealJson.Options));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    static TrainOutcome Usage(CliContext ctx, params IEnumerable<string> lines)
    {
        var first = true;
        foreach (var line in lines)
        {
            ctx.Error.WriteLine(first ? $"error: {line}" : line);
            first = false;
        }
        return new TrainOutcome(ExitCodes.Usage, null);
    }
}
