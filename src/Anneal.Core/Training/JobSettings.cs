// The normalised settings of a job: produced once, at job creation, from whatever spellings the
// request used (ours, or Synth's client's: hyperparameters and metadata.effective_config, see
// SettingKeys), stored with the job, and read as is by the runner. The CLI runs the same
// normalisation on a TOML config before uploading anything, so both report the same errors and
// warnings.
//
//   request ──Normalize──► JobSettings { Training (TrainingSettings), ValidationFileId, Compute, Warnings }
//     1. every upstream spelling (SettingKeys.All[*].Upstream) is folded into its API field;
//        two spellings with different values are an error naming both;
//     2. keys that have no effect here are removed from what is parsed and named in a warning;
//     3. the canonical `hyperparameters` object is checked by HyperparameterParser;
//     4. validation is on when a validation file is given, unless validation.enabled = false.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Training;

/// <summary>A setting that was accepted but does not (fully) take effect: which key, and why.</summary>
public sealed record SettingWarning(string Field, string Message)
{
    public override string ToString() => $"{Field}: {Message}";
}

public sealed record JobSettings(
    TrainingSettings Training,
    /// <summary>The validation file (an uploaded file id; a local path when normalising a config file), or null.</summary>
    string? ValidationFileId,
    /// <summary>metadata.effective_config.compute as sent ({gpu_type, gpu_count, nodes}); gpu_count places the ranks, nodes > 1 is refused.</summary>
    JsonObject? Compute,
    IReadOnlyList<SettingWarning> Warnings)
{
    const string Hp = "hyperparameters";

    /// <summary>[compute].nodes as a number (an integer or a string of digits); null when absent or not a number.</summary>
    public static int? Nodes(JsonObject? compute) =>
        compute?["nodes"] is JsonValue v && (v.TryGetValue<long>(out var n)   // long: a TOML integer; int: parsed JSON
            || (v.TryGetValue<int>(out var i) && (n = i) == i)
            || (v.TryGetValue<string>(out var text) && long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out n)))
            ? (int)Math.Clamp(n, int.MinValue, int.MaxValue) : null;

    /// <summary>Why a job asking for several hosts is refused: every rank of a job runs on one host.</summary>
    public static string NodesUnsupported(int nodes) =>
        $"is {nodes}; several hosts per job are not supported yet: every rank of a job runs on one host. " +
        "Set nodes = 1 and gpu_count to the devices of one host (gpu_count = N runs N data-parallel ranks)";

    /// <summary>
    /// Normalises a job request's settings. <paramref name="validationFileId"/> is the request's
    /// validation_file_id (or, for a config file, the validation path).
    /// </summary>
    public static (JobSettings? Settings, IReadOnlyList<ErrorItem> Errors) Normalize(
        JsonObject? hyperparameters, JsonObject? metadata, string? validationFileId)
    {
        var errors = new List<ErrorItem>();
        var warnings = new List<SettingWarning>();
        if (hyperparameters is null)
        {
            errors.Add(new ErrorItem(null, Hp, "is required: give at least one of n_epochs or total_steps (aliases train_steps, steps)"));
            return (null, errors);
        }
        var request = new JsonObject
        {
            [Hp] = hyperparameters.DeepClone(),
            ["metadata"] = metadata?.DeepClone(),
            ["validation_file_id"] = validationFileId,
        };

        // 1. Upstream spellings → API fields.
        var renamed = new List<(string Canonical, string Source)>();
        foreach (var key in SettingKeys.All.Where(k => k.Spellings.Count > 0))
        {
            var canonical = Get(request, key.ApiField);
            var chosenFrom = canonical is null ? null : key.ApiField;
            foreach (var spelling in key.Spellings)
            {
                if (!TryGet(request, spelling.Path, out var raw)) continue;
                // Upstream keys inside `hyperparameters` are not ours: take them out before parsing.
                if (spelling.Path.StartsWith(Hp + ".", StringComparison.Ordinal)) Remove(request, spelling.Path);
                var value = spelling.Convert is { } convert ? convert(raw) : raw?.DeepClone();
                if (value is null) continue;
                if (canonical is null)
                {
                    canonical = value;
                    chosenFrom = spelling.Path;
                    Set(request, key.ApiField, value.DeepClone());
                    renamed.Add((key.ApiField, spelling.Path));
                }
                else if (!JsonNode.DeepEquals(canonical, value))
                    errors.Add(new ErrorItem(null, spelling.Path,
                        $"{Show(raw)} conflicts with {chosenFrom} = {Show(Get(request, key.ApiField))}; they name the same setting ({key.TomlKey} in a config file): give it once"));
            }
        }

        var hp = (JsonObject)request[Hp]!;
        // 2. Accepted, no effect here: say so by name.
        if (hp["world_size"] is { } worldSize)
        {
            hp.Remove("world_size");
            if (JsonFields.ToElement(worldSize) is { ValueKind: System.Text.Json.JsonValueKind.Number } w && w.TryGetDouble(out var n) && n >= 1 && n == Math.Floor(n))
                warnings.Add(new SettingWarning($"{Hp}.world_size",
                    $"{n} has no effect: a job here trains on one device (CPU or one GPU); per_device_batch × gradient_accumulation_steps is the whole batch"));
            else
                errors.Add(new ErrorItem(null, $"{Hp}.world_size", $"must be an integer ≥ 1, got {JsonFields.Describe(worldSize)}"));
        }
        if (hp["parallelism"] is JsonObject parallelism)
            foreach (var (name, value) in parallelism)
                warnings.Add(new SettingWarning($"{Hp}.parallelism.{name}",
                    $"= {Show(value)} has no effect here: a job runs in one process on one device (only activation_checkpointing is honoured)"));
        if (request["metadata"]?["effective_config"]?["data"]?["topology"] is JsonObject topology)
            foreach (var (name, value) in topology)
                warnings.Add(new SettingWarning($"metadata.effective_config.data.topology.{name}", $"= {Show(value)} has no effect here: a job runs on one device"));
        if (hp["packing"] is JsonValue packing && packing.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False)
            warnings.Add(new SettingWarning($"{Hp}.packing",
                $"is the old spelling of batching: read as {(packing.GetValueKind() == System.Text.Json.JsonValueKind.True ? "batching = \"packed\"" : "no packing (batching as given, else the default \"" + BatchingModes.Default + "\")")}; write batching instead"));
        var compute = request["metadata"]?["effective_config"]?["compute"] as JsonObject;
        if (Nodes(compute) is > 1 and var nodes)
            errors.Add(new ErrorItem(null, "metadata.effective_config.compute.nodes", NodesUnsupported(nodes)));

        // 3. The canonical object, by the API's rules; errors name the spelling the request used.
        var (training, parseErrors) = HyperparameterParser.Parse(hp);
        foreach (var e in parseErrors)
        {
            var field = e.Field ?? Hp;
            var source = renamed.FirstOrDefault(r => field == r.Canonical || field.StartsWith(r.Canonical + ".", StringComparison.Ordinal) || field.StartsWith(r.Canonical + "[", StringComparison.Ordinal));
            errors.Add(source.Source is null ? e : e with { Field = source.Source + field[source.Canonical.Length..] });
        }
        if (errors.Count > 0 || training is null) return (null, errors);

        // 4. Validation runs when there is a validation file, unless switched off.
        var validationFile = request["validation_file_id"] is JsonValue vf && vf.TryGetValue<string>(out var file) ? file : null;
        var enabledGiven = hp["validation"]?["enabled"] is JsonValue e1 && e1.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False
            ? e1.GetValueKind() == System.Text.Json.JsonValueKind.True : (bool?)null;
        var enabled = enabledGiven ?? validationFile is not null;
        if (validationFile is null && hp["validation"] is JsonObject { Count: > 0 } && enabledGiven != false)
            warnings.Add(new SettingWarning($"{Hp}.validation",
                "validation settings ([training.validation]) are given but there is no validation file (validation_file_id, metadata.effective_config.data.validation_files, or data.validation_path in a config file): nothing is evaluated"));
        training = training with { Validation = training.Validation with { Enabled = enabled && validationFile is not null } };

        return (new JobSettings(training, validationFile, (JsonObject?)compute?.DeepClone(), warnings), errors);
    }

    static string Show(JsonNode? v) => v?.ToJsonString(AnnealJson.Options) ?? "null";

    // Paths are dot-separated keys; a trailing "[0]" on a key means the first item of that list.
    static bool TryGet(JsonObject root, string path, out JsonNode? value)
    {
        value = null;
        JsonNode? node = root;
        foreach (var part in path.Split('.'))
        {
            var (key, index) = Split(part);
            if (node is not JsonObject o || !o.TryGetPropertyValue(key, out node)) return false;
            if (index is { } i)
            {
                if (node is not JsonArray a || a.Count <= i) return false;
                node = a[i];
            }
        }
        value = node;
        return true;
    }

    static JsonNode? Get(JsonObject root, string path) => TryGet(root, path, out var v) ? v : null;

    static void Set(JsonObject root, string path, JsonNode? value)
    {
        var parts = path.Split('.');
        var node = root;
        foreach (var part in parts[..^1])
        {
            if (node[part] is not JsonObject child)
            {
                child = new JsonObject();
                node[part] = child;
            }
            node = child;
        }
        node[parts[^1]] = value;
    }

    static void Remove(JsonObject root, string path)
    {
        var cut = path.LastIndexOf('.');
        if ((cut < 0 ? root : Get(root, path[..cut])) is JsonObject parent) parent.Remove(path[(cut + 1)..]);
    }

    static (string Key, int? Index) Split(string part)
    {
        var open = part.IndexOf('[');
        return open < 0 ? (part, null) : (part[..open], int.Parse(part[(open + 1)..^1], System.Globalization.CultureInfo.InvariantCulture));
    }
}
