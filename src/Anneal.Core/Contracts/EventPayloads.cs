// The `data` of the events the trainer sends and the server and CLI read: one record per event
// type, so a field is named in one place. On the wire they are the event's JSON object
// (snake_case, AnnealJson); readers take what they know and ignore the rest.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Core.Contracts;

/// <summary>sft.progress: one per optimizer step.</summary>
public sealed record ProgressData(
    long Step, long TotalSteps, double Epoch, double Loss, double Lr, double? GradNorm,
    double? TokensPerSecond, double? EtaSeconds, long? TrainedTokens);

/// <summary>sft.checkpoint.saved: a complete checkpoint folder (path relative to the job once stored).</summary>
public sealed record CheckpointSavedData(long Step, string Path, JsonObject? Metrics);

/// <summary>sft.completed as the trainer sends it (the server adds fine_tuned_model).</summary>
public sealed record CompletedData(string OutputDir, string FinalPath, string? MergedPath, long? TrainedTokens, long? WeightsStep);

/// <summary>sft.validation.summary: the validation loss at a step.</summary>
public sealed record ValidationSummaryData(long Step, double ValLoss);

/// <summary>sft.best_model.restored: the final weights are those of an earlier, better step.</summary>
public sealed record BestModelRestoredData(long Step, string Metric, double? Value, long LastStep);

/// <summary>sft.training.diverging: the loss ran far above its lowest value.</summary>
public sealed record DivergingData(long Step, double Loss, double LowestLoss, long LowestStep, double LearningRate);

public static class EventData
{
    public static JsonObject ToJson<T>(T payload) =>
        JsonSerializer.SerializeToNode(payload, AnnealJson.Options)!.AsObject();

    /// <summary>The payload, or null when the data is missing or not of that shape (an older or foreign sender).</summary>
    public static T? Read<T>(JsonObject? data) where T : class
    {
        if (data is null) return null;
        try { return data.Deserialize<T>(AnnealJson.Options); }
        catch (JsonException) { return null; }
        catch (InvalidOperationException) { return null; }
    }
}
