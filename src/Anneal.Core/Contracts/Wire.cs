// Wire strings shared by the server, the CLI and the trainer: one place, so they cannot drift.
// Names follow DESIGN.md §3 (HTTP API) and the upstream `sft.` event prefix.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Anneal.Core.Contracts;

public static class JobStatus
{
    public const string Created = "created";
    public const string Queued = "queued";
    public const string Running = "running";
    public const string Paused = "paused";
    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string Cancelled = "cancelled";

    public static bool IsTerminal(string status) => status is Succeeded or Failed or Cancelled;
}

public static class FileStatus
{
    public const string Processing = "processing";
    public const string Ready = "ready";
    public const string Failed = "failed";
}

public static class EventTypes
{
    public const string Created = "sft.created";
    public const string Queued = "sft.queued";
    public const string Running = "sft.running";
    public const string ModelLoading = "sft.model.loading";
    public const string ModelDownload = "sft.model.download";
    public const string DataPrepared = "sft.data.prepared";
    /// <summary>The memory model's estimate and choices (activation checkpointing, optimizer state), before weights load.</summary>
    public const string MemoryPlanned = "sft.memory.planned";
    public const string Progress = "sft.progress";
    public const string ValidationSummary = "sft.validation.summary";
    public const string CheckpointSaved = "sft.checkpoint.saved";
    public const string Completed = "sft.completed";
    public const string Failed = "sft.failed";
    public const string Cancelled = "sft.cancelled";
    public const string Log = "sft.log";
    public const string Requeued = "sft.requeued";
    public const string Paused = "sft.paused";
    public const string Resumed = "sft.resumed";
    /// <summary>A setting accepted but without effect here (data: field, message).</summary>
    public const string ConfigWarning = "sft.config.warning";
    /// <summary>The final weights are those of an earlier, better evaluated step (data: step, metric, value, last_step).</summary>
    public const string BestModelRestored = "sft.best_model.restored";
    /// <summary>The training loss ran far above its lowest value (data: step, loss, lowest_loss, lowest_step, learning_rate).</summary>
    public const string Diverging = "sft.training.diverging";
}

public static class MetricNames
{
    public const string TrainLoss = "train.loss";
    public const string TrainLr = "train.lr";
    public const string TrainGradNorm = "train.grad_norm";
    public const string TrainTokensPerSecond = "train.tokens_per_second";
    public const string ValLoss = "val.loss";
}

/// <summary>Stable `error.code` values of failed jobs and of problem+json responses.</summary>
public static class ErrorCodes
{
    // Job failures (error.code on a failed job).
    public const string UserDataError = "user_data_error";
    public const string UserConfigError = "user_config_error";
    public const string OutOfMemory = "out_of_memory";
    public const string TrainerCrashed = "trainer_crashed";
    public const string Internal = "internal_error";
    public const string ServerRestarted = "server_restarted";

    // HTTP problem codes.
    public const string Unauthorized = "unauthorized";
    public const string NotFound = "not_found";
    public const string ValidationFailed = "validation_failed";
    public const string InvalidState = "invalid_state";
    public const string PayloadTooLarge = "payload_too_large";
    public const string FileNotReady = "file_not_ready";
    public const string UnknownModel = "unknown_model";
    public const string BadRequest = "bad_request";
    public const string IdempotencyKeyReused = "idempotency_key_reused";
    public const string FileFailed = "file_failed";
    /// <summary>A deployment asked for a device that a training job (or the other device's deployments) holds now.</summary>
    public const string DeviceBusy = "device_busy";
    /// <summary>A job's [compute] that neither the server's own runner nor any recently seen worker can ever meet.</summary>
    public const string ComputeUnavailable = "compute_unavailable";
    /// <summary>The object store (`anneal serve --object-store`) could not be reached, refused a request, or held damaged bytes.</summary>
    public const string ObjectStore = "object_store_error";
}

public static class FilePurpose
{
    public const string FineTune = "fine-tune";
}

public static class TrainingType
{
    public const string SftOffline = "sft_offline";
}

/// <summary>JSON settings used on every wire: snake_case names, as DESIGN.md §3.</summary>
public static class AnnealJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        WriteIndented = false,
    };

    public static readonly JsonSerializerOptions Indented = new(Options) { WriteIndented = true };
}
