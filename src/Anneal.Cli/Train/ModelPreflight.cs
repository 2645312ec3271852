// Checks a training config against its model before anything is uploaded, so that a job the
// server would refuse (or the trainer would fail) exits 2 with nothing uploaded (DESIGN.md §4):
// unknown model, a model this server cannot train, a mode it does not offer, sequence_length beyond the context.
// `--dry-run` uses the built-in registry (no network); a real run asks the server
// (GET /api/models, and GET /api/learning/models for ft:/fft: ids).
using System.Text.RegularExpressions;
using Anneal.Cli.Http;
using Anneal.Core;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;

namespace Anneal.Cli.Train;

public static partial class ModelPreflight
{
    /// <summary>Against the registry built into this executable; fine-tuned ids are left to the server.</summary>
    public static List<ErrorItem> CheckLocal(string model, TrainingSettings? settings)
    {
        if (IsFineTunedId(model)) return [];
        return ModelRegistry.Find(model) is { } info ? Check(info, settings) : [Unknown(model)];
    }

    /// <summary>Against the server's model lists.</summary>
    public static async Task<List<ErrorItem>> CheckRemoteAsync(AnnealClient client, string model, TrainingSettings? settings, CancellationToken ct)
    {
        var baseId = model;
        if (IsFineTunedId(model))
        {
            var fineTuned = (await client.ListFineTunedModelsAsync(ct)).Data.FirstOrDefault(m => m.Id == model);
            if (fineTuned is null)
            {
                // A checkpoint id (<fine-tuned id>:step-N) of a job that has not finished: the server resolves it.
                if (CheckpointSuffix().IsMatch(model)) return [];
                return [new ErrorItem(null, "model", $"no fine-tuned model '{model}' in your organisation (see `anneal models --fine-tuned`)")];
            }
            baseId = fineTuned.BaseModel;
        }
        var known = (await client.ListBaseModelsAsync(ct)).Data.FirstOrDefault(m => string.Equals(m.Id, baseId, StringComparison.OrdinalIgnoreCase));
        if (known is null) return [Unknown(model)];
        var info = new ModelInfo(known.Id, known.Family, known.Parameters, known.ContextLength, known.SupportsVision,
            known.MaxImagesPerMessage, known.Precision, known.TrainingModes, known.Trainable, known.TrainableNote, known.TestModel);
        return Check(info, settings);
    }

    /// <summary>The server's own rules (Core JobChecks), as API-field errors that TomlKeys can name.</summary>
    public static List<ErrorItem> Check(ModelInfo info, TrainingSettings? settings) =>
        JobChecks.CheckAgainstModel(info, settings).Select(e => new ErrorItem(null, e.Field, e.Message)).ToList();

    static ErrorItem Unknown(string model) =>
        new(null, "model", $"unknown model '{model}'{Suggest.DidYouMean(model, ModelRegistry.All.Select(m => m.Id).ToList())}; see `anneal models` for the models you can fine-tune");

    public static bool IsFineTunedId(string model) =>
        model.StartsWith("ft:", StringComparison.Ordinal) || model.StartsWith("fft:", StringComparison.Ordinal) || model.StartsWith("qft:", StringComparison.Ordinal);

    [GeneratedRegex(@":step-\d+$")]
    private static partial Regex CheckpointSuffix();
}

/// <summary>Maps API field names (`hyperparameters.lora.r`) back to the TOML keys users write (`[training.lora].r`).</summary>
public static partial class TomlKeys
{
    public static string FromApiField(string field)
    {
        if (field == "model") return "[job].model (or --model)";
        if (field == "hyperparameters") return "[hyperparameters]";
        if (!field.StartsWith("hyperparameters.", StringComparison.Ordinal)) return field;
        var rest = field["hyperparameters.".Length..];
        var cut = rest.IndexOfAny(['.', '[']);
        var (key, tail) = cut < 0 ? (rest, "") : (rest[..cut], rest[cut..]);
        return key switch
        {
            "training_mode" => "[training].mode" + tail,
            "use_qlora" => "[training].use_qlora" + tail,
            "lora" => "[training.lora]" + tail,
            "validation" => "[training.validation]" + tail,
            "parallelism" => "[hyperparameters.parallelism]" + tail,
            _ => "[hyperparameters]." + rest,
        };
    }

    /// <summary>Rewrites API names inside a message ("use training_mode \"qlora\"" → "use [training].mode = \"qlora\"").</summary>
    public static string InMessage(string message) =>
        TrainingModeValue().Replace(message, "[training].mode = \"").Replace("use_qlora = ", "[training].use_qlora = ");

    public static string Describe(ErrorItem item) =>
        (item.Line is { } l ? $"Line {l}: " : "") + (item.Field is { } f ? $"{FromApiField(f)}: " : "") + InMessage(item.Message);

    [GeneratedRegex("\\btraining_mode \"")]
    private static partial Regex TrainingModeValue();
}
