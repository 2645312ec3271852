// Loads the TOML training config (DESIGN.md §5) with Tomlyn and turns it into the job payload:
//   hyperparameters = [hyperparameters] (+ [hyperparameters.parallelism] as `parallelism`)
//                     + training_mode/use_qlora from [training] mode/use_qlora (or [algorithm] variety)
//                     + lora from [training.lora] (or upstream's [lora]) + validation from [training.validation]
//                     + train_vision from [training] + vision from [model] (vision models)
//   effective_config = {compute: [compute], data: [data], training: [training]} (+ upstream's [metadata])
// The payload is then normalised by JobSettings.Normalize, the same code the server runs at job
// creation (upstream spellings such as batch_size or lora_rank folded in, ranges checked, warnings
// for keys without effect here); its errors are mapped back to the TOML key path and line
// ("training.lora.r", line 14).
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Tomlyn;
using Tomlyn.Model;
using Tomlyn.Parsing;
using Tomlyn.Serialization;
using Tomlyn.Syntax;

namespace Anneal.Core.Config;

public static class TrainingConfigLoader
{
    /// <summary>Sections and their keys; null means any key (tags: free-form labels).</summary>
    public static readonly IReadOnlyDictionary<string, IReadOnlyList<string>?> Sections = new Dictionary<string, IReadOnlyList<string>?>
    {
        ["algorithm"] = ["type", "method", "variety"],
        ["job"] = ["model", "data", "data_path", "poll_seconds"],
        ["compute"] = ["gpu_type", "gpu_count", "nodes"],
        ["data"] = ["validation_path", "topology"],
        ["training"] = ["mode", "use_qlora", "validation", "lora", "train_vision"],
        ["hyperparameters"] = [.. HyperparameterParser.TopLevelKeys, .. SettingKeys.UpstreamHyperparameterKeys],
        ["model"] = HyperparameterParser.VisionKeys,
        ["tags"] = null,
        // Spellings of upstream's example configs: [lora] is [training.lora]; [model_config] holds
        // [model]'s max_images_per_message; [metadata] effective_config repeats [compute]/[data]/[training].
        ["lora"] = HyperparameterParser.LoraKeys,
        ["model_config"] = ["max_images_per_message", "supports_vision", "max_model_len"],
        ["metadata"] = ["effective_config"],
    };

    /// <summary>Top-level keys outside any section: upstream's `type = "sft"` (the job type).</summary>
    static readonly IReadOnlyList<string> TopLevelKeys = ["type"];

    // [algorithm] variety → training mode (the upstream names: fft = full fine-tune).
    static readonly Dictionary<string, string> Varieties = new()
    {
        ["fft"] = TrainingModes.FullFinetune,
        ["lora"] = TrainingModes.Lora,
        ["qlora"] = TrainingModes.Qlora,
    };

    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Load(string path) => Load(path, null);

    /// <summary>Loads a config; <paramref name="modelOverride"/> (the CLI's --model) replaces job.model.</summary>
    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Load(string path, string? modelOverride)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, [new ConfigError(path, "file", $"cannot read the config: {e.Message}")]);
        }
        return Parse(text, path, modelOverride);
    }

    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Parse(string tomlText, string sourcePath) =>
        Parse(tomlText, sourcePath, null);

    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Parse(string tomlText, string sourcePath, string? modelOverride)
    {
        // Syntax first: the syntax parser reports every error with its position (including keys
        // defined twice, which the deserializer alone lets through).
        if (TomlDepth.TooDeepLine(tomlText) is { } deepLine)
            return (null, [new ConfigError(sourcePath, "syntax", $"arrays or inline tables nested deeper than {TomlDepth.MaxDepth} levels; a training config needs a few", deepLine)]);
        var syntax = SyntaxParser.Parse(tomlText, sourcePath, true);
        if (syntax.HasErrors)
            return (null, syntax.Diagnostics
                .Where(d => d.Kind == DiagnosticMessageKind.Error)
                .Select(d => new ConfigError(sourcePath, "syntax", $"{d.Message} (column {d.Span.Start.Column + 1})", d.Span.Start.Line + 1))
                .ToList());

        TomlTable root;
        var store = new TomlMetadataStore();
        try
        {
            root = TomlSerializer.Deserialize<TomlTable>(tomlText, new TomlSerializerOptions { MetadataStore = store, SourceName = sourcePath })
                ?? new TomlTable();
        }
        catch (TomlException e) when (e.Message.Contains("maximum depth", StringComparison.Ordinal))
        {
            // Dotted keys or table headers nested past the deserializer's own limit.
            return (null, [new ConfigError(sourcePath, "syntax", $"tables nested deeper than {TomlDepth.MaxDepth} levels; a training config needs a few", e.Line)]);
        }
        catch (TomlException e)
        {
            return (null, [new ConfigError(sourcePath, "syntax", e.Message, e.Line)]);
        }
        if (TomlDepth.TooDeepKey(root) is { } deepKey)
            return (null, [new ConfigError(sourcePath, deepKey, $"nested deeper than {TomlDepth.MaxDepth} levels; a training config needs a few")]);
        return new Loader(sourcePath, store).Run(root, modelOverride);
    }

    sealed class Loader(string file, TomlMetadataStore store)
    {
        readonly List<ConfigError> errors = [];
        readonly Dictionary<string, int> lines = [];

        void Error(string key, string message) => errors.Add(new ConfigError(file, key, message, LineOf(key)));

        public (TrainingConfig?, IReadOnlyList<ConfigError>) Run(TomlTable root, string? modelOverride)
        {
            var doc = Table(root, "");
            var items = new List<ErrorItem>();
            var top = new JsonFields(doc, "", items);

            foreach (var (name, _) in doc)
                if (!Sections.ContainsKey(name) && !TopLevelKeys.Contains(name))
                    Error(name, $"unknown section [{name}]{(Suggest.Closest(name, Sections.Keys) is { } c ? $"; did you mean [{c}]?" : "")} (allowed: {string.Join(", ", Sections.Keys.Select(s => $"[{s}]"))})");
            top.Choice("type", ["sft", "offline", "sft_offline"]);
            var s = Sections.Keys.ToDictionary(k => k, k => doc.ContainsKey(k) ? top.Object(k) : null);
            foreach (var (name, obj) in s)
                if (obj is not null && Sections[name] is { } allowed && name != "hyperparameters")
                    new JsonFields(obj, name, items).RejectUnknown(allowed);

            // [job]
            var job = Fields(s["job"], "job", items);
            var model = job?.String("model", required: modelOverride is null);
            if (!doc.ContainsKey("job") && modelOverride is null) Error("job.model", "is required: add [job] with model = \"Qwen/Qwen3-4B\" (see GET /api/models)");
            var data = job?.String("data");
            var dataPath = job?.String("data_path");
            if (data is not null && dataPath is not null && data != dataPath)
                Error("job.data_path", $"\"{dataPath}\" conflicts with job.data = \"{data}\"; give only one");
            var pollSeconds = job?.Number("poll_seconds", 0, max: 7 * 24 * 3600, minExclusive: true);

            // [algorithm]
            var algorithm = Fields(s["algorithm"], "algorithm", items);
            algorithm?.Choice("type", ["offline"]);
            algorithm?.Choice("method", ["sft", "supervised_finetune"]);
            var variety = algorithm?.Choice("variety", [.. Varieties.Keys]);

            // [compute], [data], [model], [tags]
            var compute = Fields(s["compute"], "compute", items);
            compute?.String("gpu_type");
            compute?.Int("gpu_count", 1, 1024);
            compute?.Int("nodes", 1, 1024);
            var dataSection = Fields(s["data"], "data", items);
            var validationPath = dataSection?.String("validation_path");
            var maxImages = Fields(s["model"], "model", items)?.Int("max_images_per_message", 1, 64);
            var modelConfig = Fields(s["model_config"], "model_config", items);
            if (modelConfig?.Int("max_images_per_message", 1, 64) is { } upstreamMaxImages)
            {
                if (maxImages is { } m && m != upstreamMaxImages)
                    Error("model_config.max_images_per_message", $"{upstreamMaxImages} conflicts with model.max_images_per_message = {m}; give it once");
                maxImages ??= upstreamMaxImages;
            }
            modelConfig?.Bool("supports_vision");
            if (modelConfig?.Int("max_model_len", 16, 1 << 20) is { } maxModelLen)
                Warn("model_config.max_model_len", $"= {maxModelLen} has no effect here: hyperparameters.sequence_length bounds the training rows");
            if (s["model_config"]?.ContainsKey("supports_vision") == true)
                Warn("model_config.supports_vision", "has no effect here: the model registry says which models take images (GET /api/models)");
            var tags = new Dictionary<string, string>();
            foreach (var (key, value) in s["tags"] ?? [])
            {
                if (value is JsonValue v) tags[key] = v.GetValueKind() == System.Text.Json.JsonValueKind.String ? v.GetValue<string>() : v.ToJsonString();
                else items.Add(new ErrorItem(null, $"tags.{key}", $"must be a string, number or boolean, got {JsonFields.Describe(value)}"));
            }

            var training = s["training"];
            if (s["lora"] is { } topLora)
            {
                // Upstream's examples write [lora]; ours is [training.lora].
                if (training?["lora"] is not null) Error("lora", "is also given as [training.lora]; give it once");
                else
                {
                    training = (JsonObject?)training?.DeepClone() ?? new JsonObject();
                    training["lora"] = topLora.DeepClone();
                    loraFrom = "lora";
                }
            }
            var (hyperparameters, origins) = BuildHyperparameters(s["hyperparameters"], training, variety);
            // [model] (and upstream's [model_config] images per message) → hyperparameters.vision.
            // max_images_per_message was read (and checked) above, from either spelling; unknown keys were reported.
            var visionKeys = new JsonObject((s["model"] ?? []).Where(k => k.Key is "min_pixels" or "max_pixels")
                .Select(k => KeyValuePair.Create(k.Key, k.Value?.DeepClone())));
            if (maxImages is { } images) visionKeys["max_images_per_message"] = images;
            if (visionKeys.Count > 0)
            {
                if (hyperparameters.ContainsKey("vision")) Error("hyperparameters.vision", "is also given as [model]; give it once, in [model]");
                else
                {
                    hyperparameters["vision"] = visionKeys;
                    origins.Add(("hyperparameters.vision", "model"));
                }
            }
            foreach (var item in items) Error(item.Field ?? "", item.Message);

            var effective = new JsonObject
            {
                ["compute"] = s["compute"]?.DeepClone() ?? new JsonObject(),
                ["data"] = s["data"]?.DeepClone() ?? new JsonObject(),
                ["training"] = s["training"]?.DeepClone() ?? new JsonObject(),
            };
            MergeUpstreamMetadata(s["metadata"], effective);

            // The same normalisation the server runs at job creation: upstream spellings folded in,
            // every range checked, warnings for keys without effect here.
            var (settings, settingErrors) = JobSettings.Normalize(hyperparameters, new JsonObject { ["effective_config"] = effective.DeepClone() }, validationPath);
            foreach (var item in settingErrors)
            {
                var key = ToTomlKey(item.Field ?? HyperparameterParser.Prefix, origins);
                Error(key, UnknownHyperparameter(key, item.Message) ?? item.Message);
            }

            if (errors.Count > 0) return (null, errors);
            foreach (var w in settings!.Warnings) Warn(ToTomlKey(w.Field, origins), w.Message);
            return (new TrainingConfig(file, modelOverride ?? model!, data ?? dataPath, validationPath, pollSeconds,
                hyperparameters, effective, maxImages, tags) { Settings = settings, Warnings = warnings }, errors);
        }

        readonly List<ConfigError> warnings = [];
        string loraFrom = "training.lora";

        void Warn(string key, string message) => warnings.Add(new ConfigError(file, key, message, LineOf(key)));

        /// <summary>
        /// Upstream's examples repeat [compute] (and the like) as [metadata] effective_config = {…}:
        /// a part that is missing or empty in ours is taken from there; a different value is an error.
        /// </summary>
        void MergeUpstreamMetadata(JsonObject? metadata, JsonObject effective)
        {
            if (metadata?["effective_config"] is not JsonObject upstream) return;
            foreach (var (name, value) in upstream)
            {
                if (value is null) continue;
                if (effective[name] is JsonObject { Count: > 0 } ours)
                {
                    if (!JsonNode.DeepEquals(ours, value))
                        Error($"metadata.effective_config.{name}", $"{value.ToJsonString()} conflicts with [{name}] = {ours.ToJsonString()}; give it once");
                }
                else effective[name] = value.DeepClone();
            }
        }

        static JsonFields? Fields(JsonObject? obj, string prefix, List<ErrorItem> items) =>
            obj is null ? null : new JsonFields(obj, prefix, items);

        /// <summary>The contract's `hyperparameters` object, and where each of its keys came from in the TOML.</summary>
        (JsonObject, List<(string Json, string Toml)>) BuildHyperparameters(JsonObject? section, JsonObject? training, string? variety)
        {
            var hp = (JsonObject?)section?.DeepClone() ?? new JsonObject();
            var origins = new List<(string Json, string Toml)> { ("hyperparameters", "hyperparameters") };
            void Move(string tomlKey, string jsonKey)
            {
                if (training is null || !training.TryGetPropertyValue(tomlKey, out var value)) return;
                if (hp.ContainsKey(jsonKey))
                {
                    Error($"hyperparameters.{jsonKey}", $"is also given as training.{tomlKey}; give it once, in [training]");
                    return;
                }
                hp[jsonKey] = value?.DeepClone();
                origins.Add(($"hyperparameters.{jsonKey}", tomlKey == "lora" ? loraFrom : $"training.{tomlKey}"));
            }
            // mode = "sft_offline" (upstream's example) names the job type, not a training mode.
            if (training?["mode"] is { } modeValue && SettingKeys.ModeOf(modeValue) is null)
            {
                training = (JsonObject)training.DeepClone();
                training.Remove("mode");
            }
            Move("mode", "training_mode");
            Move("use_qlora", "use_qlora");
            Move("lora", "lora");
            Move("validation", "validation");
            Move("train_vision", "train_vision");
            if (variety is not null && Varieties.TryGetValue(variety, out var mode))
            {
                if (!hp.ContainsKey("training_mode"))
                {
                    hp["training_mode"] = mode;
                    origins.Add(("hyperparameters.training_mode", "algorithm.variety"));
                }
                else if (hp["training_mode"] is JsonValue m && m.GetValueKind() == System.Text.Json.JsonValueKind.String
                         && m.GetValue<string>() != mode
                         && !(m.GetValue<string>() == TrainingModes.Lora && mode == TrainingModes.Qlora && hp["use_qlora"]?.ToJsonString() == "true"))
                    // [algorithm] is upstream's coarse label (its own examples pair variety = "fft"
                    // with mode = "lora"); the specific [training] mode is what trains.
                    Warn("algorithm.variety", $"\"{variety}\" disagrees with training.mode = \"{m.GetValue<string>()}\"; training.mode is used");
            }
            return (hp, origins);
        }

        /// <summary>
        /// The parser lists the API's keys for an unknown key; in [hyperparameters] of a TOML file the
        /// allowed keys are fewer (mode, use_qlora, lora and validation belong in [training]).
        /// </summary>
        static string? UnknownHyperparameter(string key, string message)
        {
            if (!message.StartsWith("unknown key", StringComparison.Ordinal) || !key.StartsWith("hyperparameters.", StringComparison.Ordinal)) return null;
            var name = key["hyperparameters.".Length..];
            if (name.Contains('.')) return null;
            var allowed = TomlHyperparameterKeys;
            var training = Sections["training"]!;
            var hint = Suggest.Closest(name, allowed) is { } h ? $"; did you mean '{h}'?"
                : Suggest.Closest(name, training) is { } t ? $"; did you mean training.{t}?" : "";
            return $"unknown key{hint} (allowed in [hyperparameters]: {string.Join(", ", allowed)}; [training] holds mode, use_qlora, train_vision, [training.lora], [training.validation]; [model] the image settings)";
        }

        static readonly IReadOnlyList<string> TomlHyperparameterKeys = HyperparameterParser.TopLevelKeys
            .Except(["training_mode", "use_qlora", "lora", "validation", "parallelism", "train_vision", "vision"])
            .Concat(SettingKeys.UpstreamHyperparameterKeys)
            .Append("[hyperparameters.parallelism]")
            .ToList();

        /// <summary>"hyperparameters.lora.target_modules[1]" → "training.lora.target_modules[1]".</summary>
        static string ToTomlKey(string field, List<(string Json, string Toml)> origins)
        {
            const string effective = "metadata.effective_config.";
            if (field.StartsWith(effective, StringComparison.Ordinal)) return field[effective.Length..];
            if (field == "validation_file_id") return "data.validation_path";
            foreach (var (json, toml) in origins.OrderByDescending(o => o.Json.Length))
                if (field == json || field.StartsWith(json + ".", StringComparison.Ordinal) || field.StartsWith(json + "[", StringComparison.Ordinal))
                    return toml + field[json.Length..];
            return field;
        }

        /// <summary>The line of a key path, or of its closest parent that has one.</summary>
        int? LineOf(string key)
        {
            for (var k = key; k.Length > 0;)
            {
                if (lines.TryGetValue(k, out var line)) return line;
                var cut = Math.Max(k.LastIndexOf('.'), k.LastIndexOf('['));
                if (cut <= 0) break;
                k = k[..cut];
            }
            return null;
        }

        // TOML → JSON, recording the line of every key path on the way.
        JsonObject Table(TomlTable table, string prefix)
        {
            store.TryGetProperties(table, out var metadata);
            var obj = new JsonObject();
            foreach (var (key, value) in table)
            {
                var path = prefix.Length == 0 ? key : $"{prefix}.{key}";
                if (metadata is not null && metadata.TryGetProperty(key, out var property) && property.Span is { } span)
                    lines[path] = span.Start.Line + 1;
                // A value that cannot be converted was reported; leaving it out avoids a second error.
                if (Value(value, path) is { } node) obj[key] = node;
            }
            return obj;
        }

        JsonNode? Value(object? value, string path)
        {
            switch (value)
            {
                case TomlTable t:
                    return Table(t, path);
                case TomlTableArray ta:
                    return new JsonArray(ta.Select((t, i) => (JsonNode?)Table(t, $"{path}[{i}]")).ToArray());
                case TomlArray a:
                    return new JsonArray(a.Select((item, i) => Value(item, $"{path}[{i}]")).ToArray());
                case string str:
                    return JsonValue.Create(str);
                case bool b:
                    return JsonValue.Create(b);
                case long l:
                    return JsonValue.Create(l);
                case double d when double.IsFinite(d):
                    return JsonValue.Create(d);
                case double d:
                    Error(path, $"must be a finite number, got {d}");
                    return null;
                default:
                    Error(path, $"dates and times are not allowed here, got {value}; use a string or a number");
                    return null;
            }
        }
    }
}
