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

/// <summary>
/// Maps API field names (`hyperparameters.lora.r`) back to the TOML keys users write
/// (`[training.lora].r`), read from Core's one table of setting keys (SettingKeys).
/// </summary>
public static partial class TomlKeys
{
    public static string FromApiField(string field)
    {
        if (field == "model") return "[job].model (or --model)";
        if (field == "hyperparameters") return "[hyperparameters]";
        // The setting the field names, or lies inside: `…target_modules[1]`, `…parallelism.tp`.
        var key = SettingKeys.All
            .Where(k => field.StartsWith(k.ApiField, StringComparison.Ordinal)
                        && (field.Length == k.ApiField.Length || field[k.ApiField.Length] is '.' or '['))
            .MaxBy(k => k.ApiField.Length);
        if (key is not null) return Toml(key) + field[key.ApiField.Length..];
        // A group of settings (`hyperparameters.lora`): the TOML table its keys sit in.
        var member = SettingKeys.All.FirstOrDefault(k => k.ApiField.StartsWith(field + ".", StringComparison.Ordinal));
        if (member is not null)
        {
            var depth = member.ApiField[(field.Length + 1)..].Count(c => c == '.') + 1;
            var table = member.TomlKey;
            for (var i = 0; i < depth; i++) table = table[..table.LastIndexOf('.')];
            return $"[{table}]";
        }
        return field.StartsWith("hyperparameters.", StringComparison.Ordinal) ? "[hyperparameters]." + field["hyperparameters.".Length..] : field;
    }

    /// <summary>`training.lora.r` → `[training.lora].r`; a table-valued key is its own table: `[hyperparameters.parallelism]`.</summary>
    static string Toml(SettingKey key)
    {
        if (key.Type.StartsWith("table", StringComparison.Ordinal)) return $"[{key.TomlKey}]";
        var dot = key.TomlKey.LastIndexOf('.');
        return dot < 0 ? key.TomlKey : $"[{key.TomlKey[..dot]}].{key.TomlKey[(dot + 1)..]}";
    }

    static readonly string Mode = Toml(SettingKeys.Api("hyperparameters.training_mode"));
    static readonly string UseQlora = Toml(SettingKeys.Api("hyperparameters.use_qlora"));

    /// <summary>Rewrites API names inside a message ("use training_mode \"qlora\"" → "use [training].mode = \"qlora\"").</summary>
    public static string InMessage(string message) =>
        TrainingModeValue().Replace(message, Mode + " = \"").Replace("use_qlora = ", UseQlora + " = ");

    public static string Describe(ErrorItem item) =>
        (item.Line is { } l ? $"Line {l}: " : "") + (item.Field is { } f ? $"{FromApiField(f)}: " : "") + InMessage(item.Message);

    [GeneratedRegex("\\btraining_mode \"")]
    private static partial Regex TrainingModeValue();
}
