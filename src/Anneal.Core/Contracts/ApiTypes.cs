// HTTP resource shapes of DESIGN.md §3, serialised with AnnealJson.Options (snake_case).
// The server writes them and the CLI reads them.
using System.Text.Json.Nodes;

namespace Anneal.Core.Contracts;

/// <summary>One validation problem: `Line N: message`, optionally naming a field.</summary>
public sealed record ErrorItem(int? Line, string? Field, string Message)
{
    public override string ToString() =>
        (Line is { } l ? $"Line {l}: " : "") + (Field is { } f ? $"{f}: " : "") + Message;
}

public sealed record FileObject(
    string Id,
    string Object,
    string Filename,
    long Bytes,
    string Sha256,
    string Purpose,
    string Status,
    DateTimeOffset CreatedAt,
    int? NumExamples,
    long? NumTokens,
    IReadOnlyList<ErrorItem>? Errors,
    int? TotalErrors);

public sealed record FileList(IReadOnlyList<FileObject> Data, bool HasMore);

public sealed record JobError(string Code, string Message, IReadOnlyList<string>? LogTail = null);

public sealed record JobProgress(
    long Step,
    long TotalSteps,
    double Epoch,
    double? TokensPerSecond,
    double? EtaSeconds);

/// <summary>
/// A job. Members are in the order clients show them: Synth's client prints only the first 600
/// characters of this object, so what a user needs (status, result, error) comes first.
/// </summary>
public sealed record JobObject(
    string Id,
    string Status,
    string Model,
    string? FineTunedModel,
    JobError? Error,
    JobProgress? Progress,
    DateTimeOffset CreatedAt,
    /// <summary>Time of the job's latest event (status changes and progress are events).</summary>
    DateTimeOffset? UpdatedAt,
    DateTimeOffset? StartedAt,
    DateTimeOffset? FinishedAt,
    long? TrainedTokens,
    /// <summary>The optimizer step whose weights are the result: the last, or the best evaluated one (save_best_model_at_end).</summary>
    long? WeightsStep,
    string JobId,
    string Object,
    string TrainingType,
    string TrainingFileId,
    string? ValidationFileId,
    JsonObject Hyperparameters,
    JsonObject? Metadata,
    string? Suffix);

public sealed record JobList(IReadOnlyList<JobObject> Jobs, bool HasMore);

/// <summary>Body of POST /api/learning/jobs.</summary>
public sealed record CreateJobRequest(
    string? Model,
    string? TrainingType,
    string? TrainingFileId,
    string? ValidationFileId,
    JsonObject? Hyperparameters,
    JsonObject? Metadata,
    string? Suffix);

public sealed record JobEvent(
    long Seq,
    string JobId,
    string Type,
    string Level,
    string Message,
    JsonObject? Data,
    DateTimeOffset CreatedAt)
{
    /// <summary>Unique across jobs ("job_…:seq"): clients de-duplicate events by `id` as well as by `seq`.</summary>
    [System.Text.Json.Serialization.JsonPropertyOrder(-1)]
    public string Id => $"{JobId}:{Seq}";
}

/// <summary>One phase of a job's life (GET …/jobs/{id}/timeline): created, queued, running, …, succeeded.</summary>
public sealed record TimelineEntry(string Phase, DateTimeOffset CreatedAt, string? Message);

public sealed record Timeline(IReadOnlyList<TimelineEntry> Events);

/// <summary>GET …/jobs/{id}/status: the job's status and what goes with it, without its settings.</summary>
public sealed record JobStatusObject(
    string Id,
    string Status,
    string? FineTunedModel,
    JobError? Error,
    JobProgress? Progress,
    DateTimeOffset? UpdatedAt);

/// <summary>GET …/jobs/{id}/config: the request as sent and the settings it was normalised to.</summary>
public sealed record JobConfigObject(
    string Id,
    string Model,
    string TrainingType,
    JsonObject Hyperparameters,
    JsonObject? Metadata,
    JsonNode? Settings);

public sealed record EventList(IReadOnlyList<JobEvent> Events);

public sealed record MetricPoint(string Name, double Value, long Step, DateTimeOffset CreatedAt);

public sealed record MetricList(IReadOnlyList<MetricPoint> Points);

public sealed record CheckpointObject(
    string Id,
    string JobId,
    long Step,
    JsonObject? Metrics,
    DateTimeOffset CreatedAt);

public sealed record CheckpointList(IReadOnlyList<CheckpointObject> Data);

public sealed record BaseModelObject(
    string Id,
    string Object,
    string Family,
    double Parameters,
    int ContextLength,
    bool SupportsVision,
    int MaxImagesPerMessage,
    string Precision,
    IReadOnlyList<string> TrainingModes,
    bool Trainable,
    string? TrainableNote,
    bool TestModel);

public sealed record BaseModelList(IReadOnlyList<BaseModelObject> Data);

public sealed record FineTunedModelObject(
    string Id,
    string BaseModel,
    string JobId,
    DateTimeOffset CreatedAt,
    string Status);

public sealed record FineTunedModelList(IReadOnlyList<FineTunedModelObject> Data);

/// <summary>Answer of DELETE /api/learning/files/{id}.</summary>
public sealed record DeletedObject(string Id, string Object, bool Deleted);
