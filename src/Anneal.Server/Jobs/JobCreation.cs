// POST /api/learning/jobs: parse the body (400 naming the field on malformed JSON or a wrong type),
// normalise the settings (JobSettings: ours or Synth's client's spellings), validate model, training
// type, files and settings (422 listing every problem; 409 file_not_ready when the only problem is
// a file still being validated), honour Idempotency-Key, and store the job, its normalised settings,
// its `sft.created` event and a `sft.config.warning` per setting without effect, in one transaction.
// A [compute] section no runner can ever meet is refused (422 compute_unavailable, Workers/WorkerRegistry).
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Server.Auth;
using Anneal.Server.Events;
using Anneal.Server.Files;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using System.Data.Common;

namespace Anneal.Server.Jobs;

public static partial class JobCreation
{
    const int MaxBodyBytes = 1 << 20;
    const int MaxMetadataBytes = 64 * 1024;

    static readonly JsonSerializerOptions Strict = new(AnnealJson.Options) { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };

    // Expected JSON type of each body field, for "model: expected a string" messages.
    static readonly Dictionary<string, string> FieldTypes = new()
    {
        ["model"] = "a string", ["training_type"] = "a string", ["training_file_id"] = "a string",
        ["validation_file_id"] = "a string or null", ["hyperparameters"] = "an object", ["metadata"] = "an object or null",
        ["suffix"] = "a string or null",
    };

    public static async Task<Results<Created<JobObject>, Ok<JobObject>, ProblemHttpResult>> Create(HttpContext http, Db db, ServerOptions options, CancellationToken ct)
    {
        var org = http.Org();
        var body = await ReadBody(http.Request, ct);
        if (body is null) return Problems.Make(413, ErrorCodes.PayloadTooLarge, "Payload too large", $"A job request body is limited to {MaxBodyBytes} bytes.");
        var (request, parseProblem) = Parse(body);
        if (request is null) return parseProblem!;
        AdoptEffectiveTrainingMode(request);

        var idempotencyKey = http.Request.Headers["Idempotency-Key"].ToString();
        if (idempotencyKey.Length > 255)
            return Problems.BadRequest("Idempotency-Key must be at most 255 characters.", [new ErrorItem(null, "Idempotency-Key", "too long")]);
        var requestHash = Convert.ToHexStringLower(SHA256.HashData(body));
        using var conn = db.Connect();
        if (idempotencyKey.Length > 0 && Replay(conn, org, idempotencyKey, requestHash) is { } replay) return replay;

        var (settings, problem) = Validate(conn, org, request);
        if (problem is not null) return problem;
        var mode = settings!.Training.Mode;
        var model = ModelRegistry.Find(request.Model!.Trim())?.Id ?? request.Model!.Trim();
        if (RegistryBase(conn, org, model) is { } registryBase && ModelRegistry.Find(registryBase) is { } baseInfo)
            settings = settings with { Warnings = [.. settings.Warnings, .. JobChecks.WarningsAgainstModel(baseInfo, settings.Training)] };

        // A [compute] that no runner can ever meet is refused now, not left queued forever; with no
        // runner known at all the job is accepted and says what it waits for (WorkerRegistry).
        if (Workers.WorkerRegistry.Refusal(conn, options, Workers.ComputeRequest.Of(request.Metadata?.ToJsonString())) is { } unplaceable) return unplaceable;
        var waiting = Workers.WorkerRegistry.NoCapacityYet(conn, options);

        var id = Ids.New("job");
        try
        {
            using var tx = Db.Begin(conn);
            // Checked again in the write transaction that inserts the job: a DELETE of the file
            // (which refuses files of unfinished jobs in its own write transaction) either
            // committed before, and the job is refused, or runs after and sees the job.
            if (FileGone(conn, tx, org, request) is { } gone) return gone;
            Db.Exec(conn, tx, """
                INSERT INTO jobs (id, org, status, model, mode, training_type, training_file_id, validation_file_id,
                                  hyperparameters, metadata, suffix, created_at, idempotency_key, request_hash, settings)
                VALUES (@id, @org, @status, @model, @mode, @type, @train, @val, @hp, @meta, @suffix, @t, @key, @hash, @settings)
                """,
                ("@id", id), ("@org", org), ("@status", JobStatus.Created), ("@model", model), ("@mode", mode),
                ("@type", request.TrainingType ?? TrainingType.SftOffline), ("@train", request.TrainingFileId),
                ("@val", settings.ValidationFileId), ("@hp", request.Hyperparameters!.ToJsonString(AnnealJson.Options)),
                ("@meta", request.Metadata?.ToJsonString(AnnealJson.Options)), ("@suffix", request.Suffix), ("@t", Db.Now()),
                ("@key", idempotencyKey.Length > 0 ? idempotencyKey : null), ("@hash", requestHash),
                ("@settings", JsonSerializer.Serialize(settings, AnnealJson.Options)));
            JobEvents.Append(conn, tx, id, EventTypes.Created, "info", $"Job created for model {model} ({mode}).");
            // Accepted but without effect here: named once, on the job, where every client sees it.
            foreach (var w in settings.Warnings)
                JobEvents.Append(conn, tx, id, EventTypes.ConfigWarning, "warning", w.ToString(),
                    new JsonObject { ["field"] = w.Field, ["message"] = w.Message });
            if (waiting is not null)
                JobEvents.Append(conn, tx, id, Workers.Placement.WaitingEvent, "warning", waiting, new JsonObject { ["reason"] = "no_worker" });
            tx.Commit();
        }
        catch (DbException e) when (Db.IsUniqueViolation(e) && idempotencyKey.Length > 0)
        {
            // A concurrent request with the same Idempotency-Key won the insert.
            if (Replay(conn, org, idempotencyKey, requestHash) is { } winner) return winner;
            throw;
        }
        var job = JobRows.Find(conn, null, org, id)!;
        return TypedResults.Created($"/api/learning/jobs/{id}", job.Wire);
    }

    static ProblemHttpResult? FileGone(DbConnection conn, DbTransaction tx, string org, CreateJobRequest request)
    {
        foreach (var (field, id) in new[] { ("training_file_id", request.TrainingFileId), ("validation_file_id", request.ValidationFileId) })
            if (id is not null && FileRows.Find(conn, tx, org, id) is not { Status: FileStatus.Ready })
                return Problems.Validation($"{field}: file '{id}' was deleted while the job was being created",
                    [new ErrorItem(null, field, $"file '{id}' was deleted while the job was being created")], ErrorCodes.ValidationFailed);
        return null;
    }

    static async Task<byte[]?> ReadBody(HttpRequest request, CancellationToken ct)
    {
        using var ms = new MemoryStream();
        var buffer = new byte[16384];
        int n;
        while ((n = await request.Body.ReadAsync(buffer, ct)) > 0)
        {
            if (ms.Length + n > MaxBodyBytes) return null;
            ms.Write(buffer, 0, n);
        }
        return ms.ToArray();
    }

    static (CreateJobRequest?, ProblemHttpResult?) Parse(byte[] body)
    {
        if (body.Length == 0)
            return (null, Problems.BadRequest("The request body is empty; expected a JSON object with model, training_file_id and hyperparameters."));
        try
        {
            using (var doc = JsonDocument.Parse(body))
                if (Anneal.Core.JsonUnicode.FirstInvalid(doc.RootElement) is { } bad)
                    return (null, Problems.BadRequest($"Field '{bad}': {Anneal.Core.JsonUnicode.Problem}.", [new ErrorItem(null, bad, Anneal.Core.JsonUnicode.Problem)]));
            var node = JsonNode.Parse(body);
            if (node is not JsonObject)
                return (null, Problems.BadRequest($"The request body must be a JSON object, got {node?.GetValueKind().ToString().ToLowerInvariant() ?? "null"}."));
            var request = node.Deserialize<CreateJobRequest>(Strict);
            return (request, null);
        }
        catch (JsonException e)
        {
            var field = e.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : null;
            if (UnmappedProperty().Match(e.Message) is { Success: true } m)
            {
                var name = m.Groups[1].Value;
                return (null, Problems.BadRequest($"Unknown field '{name}'; allowed fields: {string.Join(", ", FieldTypes.Keys)}.",
                    [new ErrorItem(null, name, "unknown field")]));
            }
            if (field is not null)
            {
                var top = field.Split('.', '[')[0];
                var expected = FieldTypes.GetValueOrDefault(top, "a different type");
                return (null, Problems.BadRequest($"Field '{field}' has the wrong type: expected {expected}.", [new ErrorItem(null, field, $"expected {expected}")]));
            }
            var at = e.LineNumber is { } line ? $" (line {line + 1}, byte {e.BytePositionInLine + 1})" : "";
            var reason = e.Message.Split(" Path:")[0].Split(" LineNumber:")[0];
            return (null, Problems.BadRequest($"Malformed JSON body{at}: {reason}", [new ErrorItem(e.LineNumber is { } l ? (int)l + 1 : null, null, reason)]));
        }
    }

    /// <summary>
    /// The upstream client sends [training] mode and use_qlora only inside
    /// metadata.effective_config.training (UPSTREAM.md); they count as the hyperparameters
    /// training_mode and use_qlora unless those are given there.
    /// </summary>
    static void AdoptEffectiveTrainingMode(CreateJobRequest request)
    {
        if (request.Metadata?["effective_config"]?["training"] is not JsonObject training || request.Hyperparameters is not { } hp) return;
        foreach (var (from, to) in new[] { ("mode", "training_mode"), ("use_qlora", "use_qlora") })
            if (training[from] is { } value && !hp.ContainsKey(to)) hp[to] = value.DeepClone();
    }

    [GeneratedRegex("The JSON property '([^']+)' could not be mapped")]
    private static partial Regex UnmappedProperty();

    /// <summary>The job created earlier with this key (200), a 422 when the key was used for another body, or null.</summary>
    static Results<Created<JobObject>, Ok<JobObject>, ProblemHttpResult>? Replay(DbConnection conn, string org, string key, string requestHash)
    {
        var existing = Db.Query(conn, null, $"SELECT {JobRows.Columns} FROM jobs WHERE org = @org AND idempotency_key = @key",
            JobRows.Map, ("@org", org), ("@key", key)).FirstOrDefault();
        if (existing is null) return null;
        if (existing.RequestHash != requestHash)
            return Problems.Make(422, ErrorCodes.IdempotencyKeyReused, "Idempotency-Key reused",
                $"Idempotency-Key '{key}' was already used for job '{existing.Wire.Id}' with a different request body.",
                extra: new Dictionary<string, object?> { ["job_id"] = existing.Wire.Id });
        return TypedResults.Ok(existing.Wire);
    }

    sealed record Issue(ErrorItem Item, string Code, int Status = 422);

    /// <summary>Checks every field; returns the normalised settings, or a problem naming every issue found.</summary>
    static (JobSettings? Settings, ProblemHttpResult? Problem) Validate(DbConnection conn, string org, CreateJobRequest request)
    {
        var issues = new List<Issue>();
        void Add(string? field, string message, string code = ErrorCodes.ValidationFailed, int status = 422) =>
            issues.Add(new Issue(new ErrorItem(null, field, message), code, status));

        // Settings first (normalised once, from our spellings or upstream's): the mode decides
        // which base models accept the job.
        var (settings, settingErrors) = JobSettings.Normalize(request.Hyperparameters, request.Metadata, request.ValidationFileId);
        foreach (var e in settingErrors) issues.Add(new Issue(e, ErrorCodes.ValidationFailed));

        if (string.IsNullOrWhiteSpace(request.Model)) Add("model", "is required (a base model from GET /api/models or a fine-tuned model id)");
        else ValidateModel(conn, org, request.Model.Trim(), settings?.Training, Add);

        if (request.TrainingType is { } type && type != TrainingType.SftOffline)
            Add("training_type", $"'{type}' is not supported; expected '{TrainingType.SftOffline}'");

        // Image datasets need a vision model (registry flag; unknown models are reported above).
        var vision = request.Model is { } m && RegistryBase(conn, org, m.Trim()) is { } b && ModelRegistry.IsVision(b);
        if (string.IsNullOrWhiteSpace(request.TrainingFileId)) Add("training_file_id", "is required (an uploaded file id, file_…)");
        else CheckFile(conn, org, "training_file_id", request.TrainingFileId, vision, request.Model, Add);
        if (settings?.ValidationFileId is { } v)
            CheckFile(conn, org, request.ValidationFileId is null ? "metadata.effective_config.data.validation_files[0]" : "validation_file_id", v, vision, request.Model, Add);

        if (request.Suffix is { Length: > 64 } s) Add("suffix", $"is {s.Length} characters long; at most 64 allowed");
        if (request.Metadata is { } metadata && System.Text.Encoding.UTF8.GetByteCount(metadata.ToJsonString()) is var size && size > MaxMetadataBytes)
            Add("metadata", $"is {size} bytes of JSON; at most {MaxMetadataBytes} allowed (it is stored with the job and sent with every listing)");

        if (issues.Count == 0) return (settings, null);
        var items = issues.Select(i => i.Item).ToList();
        var detail = issues.Count == 1 ? issues[0].Item.ToString() : $"{issues.Count} problems: " + string.Join("; ", items);
        if (issues.All(i => i.Status == 409))
            return (null, Problems.Make(409, ErrorCodes.FileNotReady, "File not ready", detail + " Retry once the file's status is 'ready'.", items));
        var codes = issues.Select(i => i.Code).Distinct().ToList();
        var code = codes.Count == 1 && codes[0] != ErrorCodes.FileNotReady ? codes[0] : ErrorCodes.ValidationFailed;
        return (null, Problems.Validation(detail, items, code));
    }

    static void ValidateModel(DbConnection conn, string org, string model, TrainingSettings? settings, Action<string?, string, string, int> add)
    {
        var baseId = model;
        if (IsFineTunedId(model))
        {
            // Continue from a fine-tuned model or a checkpoint of this organisation.
            if (RegistryBase(conn, org, model) is not { } found)
            {
                add("model", $"no fine-tuned model or checkpoint '{model}' in this organisation (see GET /api/learning/models)", ErrorCodes.UnknownModel, 422);
                return;
            }
            baseId = found;
            var checkpointMode = Db.Scalar<string>(conn, null, "SELECT j.mode FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.id = @id AND c.org = @org",
                ("@id", model), ("@org", org));
            if (checkpointMode is not null && checkpointMode != TrainingModes.FullFinetune)
            {
                add("model", $"checkpoint '{model}' holds a {checkpointMode} adapter, not a full model; continue from the job's fine-tuned model instead", ErrorCodes.UnknownModel, 422);
                return;
            }
        }
        var info = ModelRegistry.Find(baseId);
        if (info is null)
        {
            add("model", $"unknown model '{model}'; supported: {string.Join(", ", ModelRegistry.All.Select(m => m.Id))}", ErrorCodes.UnknownModel, 422);
            return;
        }
        // Trainable here, mode offered, sequence_length within the context length:
        // the same checks the CLI runs before uploading (Anneal.Core.Training.JobChecks).
        foreach (var e in JobChecks.CheckAgainstModel(info, settings))
            add(e.Field, e.Message, e.Code, 422);
    }

    public static bool IsFineTunedId(string model) =>
        model.StartsWith("ft:", StringComparison.Ordinal) || model.StartsWith("fft:", StringComparison.Ordinal) || model.StartsWith("qft:", StringComparison.Ordinal);

    /// <summary>
    /// The registry model under a model id of this org: itself for a registry id, the stored base of a
    /// fine-tuned model, or the base of the job a checkpoint belongs to; null when the org has no such model.
    /// </summary>
    public static string? RegistryBase(DbConnection conn, string org, string model)
    {
        if (!IsFineTunedId(model)) return model;
        return Db.Scalar<string>(conn, null, "SELECT base_model FROM fine_tuned_models WHERE id = @id AND org = @org", ("@id", model), ("@org", org))
            ?? (Db.Scalar<string>(conn, null, "SELECT j.model FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.id = @id AND c.org = @org",
                    ("@id", model), ("@org", org)) is { } jobModel && jobModel != model
                ? RegistryBase(conn, org, jobModel)
                : null);
    }

    static void CheckFile(DbConnection conn, string org, string field, string id, bool vision, string? model, Action<string?, string, string, int> add)
    {
        var file = FileRows.Find(conn, null, org, id);
        // A validation error on the field, not a not-found problem: the same words whether the id is
        // unknown or belongs to another organisation, so nothing about other organisations leaks.
        if (file is null) add(field, $"no such file '{id}' exists in your organisation (upload it with POST /api/files, then use its id)", ErrorCodes.ValidationFailed, 422);
        else if (file.Status == FileStatus.Processing) add(field, $"file '{id}' is still being validated (status 'processing')", ErrorCodes.FileNotReady, 409);
        else if (file.Status == FileStatus.Failed)
            add(field, $"file '{id}' failed validation with {file.TotalErrors} error(s): {string.Join("; ", (file.Errors ?? []).Take(3))}", ErrorCodes.FileFailed, 422);
        else if (!vision && model is not null
                 && Db.Scalar<long?>(conn, null, "SELECT has_images FROM files WHERE id = @id", ("@id", id)) == 1)
            add(field, $"file '{id}' contains images, but model '{model}' is text-only; use a vision model (Qwen/Qwen3-VL-*)", ErrorCodes.ValidationFailed, 422);
    }
}
