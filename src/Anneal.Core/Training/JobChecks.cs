// Checks of a job's settings against the base model it trains, shared by the server (job creation,
// 422 before any trainer starts) and the CLI (before uploading anything): the model is trainable
// here, the mode is offered for it, and sequence_length fits
// the model's context length. For a fine-tuned model, pass the ModelInfo of its registry base.
// Each error names the wire field (API) and the TOML key (config file) it is about.
using Anneal.Core.Contracts;
using Anneal.Core.Models;

namespace Anneal.Core.Training;

/// <summary>One problem: Field is the API name ("hyperparameters.sequence_length"), TomlKey the config key ("hyperparameters.sequence_length"), Code an ErrorCodes value.</summary>
public sealed record JobCheckError(string Field, string TomlKey, string Message, string Code);

public static class JobChecks
{
    /// <summary>Every problem of training <paramref name="model"/> with <paramref name="settings"/>; empty when fine. Null settings: only the model is checked.</summary>
    public static IReadOnlyList<JobCheckError> CheckAgainstModel(ModelInfo model, TrainingSettings? settings)
    {
        var errors = new List<JobCheckError>();
        if (!model.Trainable)
        {
            errors.Add(new("model", "job.model", $"'{model.Id}' cannot be trained by this server: {model.TrainableNote}", ErrorCodes.UnknownModel));
            return errors;
        }
        if (settings is null) return errors;
        if (!model.TrainingModes.Contains(settings.Mode))
            errors.Add(new("hyperparameters.training_mode", "training.mode",
                $"\"{settings.Mode}\" is not available for {model.Id}; allowed: {string.Join(", ", model.TrainingModes)}",
                ErrorCodes.UserConfigError));
        if (settings.SequenceLength is { } length && length > model.ContextLength)
            errors.Add(new("hyperparameters.sequence_length", "hyperparameters.sequence_length",
                $"sequence_length {length} exceeds the context length {model.ContextLength} of {model.Id}; use at most {model.ContextLength}",
                ErrorCodes.UserConfigError));
        return errors;
    }
}
