// Every training setting in one table: where it sits in a job request (API field), in a TOML config
// (TOML key), the other spellings Synth's client and its example configs use for it (UPSTREAM.md
// §2, §8), its type and range, what it means, and whether it takes effect here. JobSettings.Normalize
// reads the upstream spellings from this table to fold them into the API field (a conflict between
// two spellings is an error naming both), and warns by name about every key that has no effect here.
// HyperparameterParser checks the canonical `hyperparameters` object with the ranges listed here.
using System.Text.Json.Nodes;

namespace Anneal.Core.Training;

public enum SettingEffect
{
    /// <summary>Takes effect as described.</summary>
    Honoured,
    /// <summary>Stored with the job and reported, but this server does not act on it (a warning says so).</summary>
    Recorded,
    /// <summary>Accepted for compatibility; has no effect here (a warning names it).</summary>
    NoEffect,
}

/// <summary>
/// One spelling of a setting other than the API field: a path in the job request (dots between
/// keys, "[0]" for the first list item) and how its value maps to the API field's value (null
/// from <see cref="Convert"/>: the value says nothing about the setting, e.g. train_kind = "sft").
/// </summary>
public sealed record SettingSpelling(string Path, Func<JsonNode?, JsonNode?>? Convert = null);

public sealed record SettingKey(
    string ApiField,
    string TomlKey,
    string Type,
    string Range,
    string Meaning,
    SettingEffect Effect = SettingEffect.Honoured,
    IReadOnlyList<SettingSpelling>? Upstream = null)
{
    public IReadOnlyList<SettingSpelling> Spellings => Upstream ?? [];
}

public static class SettingKeys
{
    const string Hp = "hyperparameters.";
    const string Effective = "metadata.effective_config.";

    static SettingSpelling[] Up(params string[] paths) => [.. paths.Select(p => new SettingSpelling(p))];

    public static readonly IReadOnlyList<SettingKey> All =
    [
        new(Hp + "n_epochs", "hyperparameters.n_epochs", "number", "> 0 and ≤ 1000", "passes over the training data (or give total_steps)"),
        new(Hp + "total_steps", "hyperparameters.total_steps", "integer", "1 … 100000000", "optimizer steps to run; aliases train_steps, steps"),
        new(Hp + "per_device_batch", "hyperparameters.per_device_batch", "integer", "1 … 4096", "examples per forward pass",
            Upstream: Up(Hp + "batch_size")),
        new(Hp + "per_device_eval_batch", "hyperparameters.per_device_eval_batch", "integer", "1 … 4096", "examples per validation forward pass"),
        new(Hp + "gradient_accumulation_steps", "hyperparameters.gradient_accumulation_steps", "integer", "1 … 65536", "forward passes per optimizer step"),
        new(Hp + "global_batch", "hyperparameters.global_batch", "integer", "1 … 1048576", "examples per optimizer step = per_device_batch × gradient_accumulation_steps"),
        new(Hp + "sequence_length", "hyperparameters.sequence_length", "integer", "16 … 262144, ≤ the model's context", "longest training row in tokens (longer examples are truncated)"),
        new(Hp + "learning_rate", "hyperparameters.learning_rate", "number", "> 0 and ≤ 1", "peak learning rate"),
        new(Hp + "warmup_ratio", "hyperparameters.warmup_ratio", "number", "0 … 1", "fraction of steps spent warming up"),
        new(Hp + "weight_decay", "hyperparameters.weight_decay", "number", "0 … 1", "AdamW weight decay"),
        new(Hp + "lr_scheduler", "hyperparameters.lr_scheduler", "string", "linear | cosine | constant", "learning-rate schedule after warmup"),
        new(Hp + "max_grad_norm", "hyperparameters.max_grad_norm", "number", "0 … 1e6 (0: no clipping)", "gradient clipping norm"),
        new(Hp + "seed", "hyperparameters.seed", "integer", "≥ 0", "seed of shuffling, LoRA init and dropout"),
        new(Hp + "save_steps", "hyperparameters.save_steps", "integer", "≥ 1", "checkpoint every N optimizer steps"),
        new(Hp + "activation_checkpointing", "hyperparameters.activation_checkpointing", "string", "auto | on | off", "recompute activations in the backward pass to save memory",
            Upstream: [new(Hp + "parallelism.activation_checkpointing", v => Bool(v) switch { true => "on", false => "off", null => v?.DeepClone() })]),
        new(Hp + "optimizer_precision", "hyperparameters.optimizer_precision", "string", "auto | exact | lean",
            "optimizer state: exact (fp32 moments and master weights), lean (bf16 moments, stochastic rounding), auto (exact when it fits)"),
        new(Hp + "batching", "hyperparameters.batching", "string", "padded | bucketed | token_budget | packed (default token_budget)",
            "how a step's examples form forward passes: padded rows, length-bucketed steps, length-sorted micro-batches filled to a token budget, or examples packed into rows"),
        new(Hp + "packing", "hyperparameters.packing", "boolean", "true | false", "old spelling: packing = true means batching = \"packed\" (a warning says so)"),
        new(Hp + "training_mode", "training.mode", "string", "full_finetune | lora | qlora", "what is trained: every weight, LoRA adapters, or LoRA on a 4-bit base",
            Upstream:
            [
                new(Effective + "training.mode", ModeOf),
                new(Hp + "train_kind", TrainKind),
            ]),
        new(Hp + "use_qlora", "training.use_qlora", "boolean", "true | false", "true means training.mode = \"qlora\"",
            Upstream: Up(Effective + "training.use_qlora")),
        new(Hp + "lora.r", "training.lora.r", "integer", "1 … 1024", "LoRA rank", Upstream: Up(Hp + "lora_rank")),
        new(Hp + "lora.alpha", "training.lora.alpha", "number", "> 0", "LoRA scaling numerator (scale = alpha / r)", Upstream: Up(Hp + "lora_alpha")),
        new(Hp + "lora.dropout", "training.lora.dropout", "number", "0 … < 1", "dropout on the LoRA input", Upstream: Up(Hp + "lora_dropout")),
        new(Hp + "lora.target_modules", "training.lora.target_modules", "list of strings or \"all-linear\"", "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
            "linear layers that get adapters", Upstream: [new(Hp + "lora_target_modules", TargetModules)]),
        new(Hp + "validation.enabled", "training.validation.enabled", "boolean", "true | false (default: true when a validation file is given)",
            "evaluate on the validation file", Upstream: Up(Effective + "training.validation.enabled")),
        new(Hp + "validation.evaluation_strategy", "training.validation.evaluation_strategy", "string", "steps | epoch | no", "when to evaluate",
            Upstream: Up(Hp + "evaluation_strategy")),
        new(Hp + "validation.eval_steps", "training.validation.eval_steps", "integer", "≥ 1 (upstream's 0: the default)", "evaluate every N optimizer steps",
            Upstream: [new(Hp + "eval_steps", v => v is JsonValue n && n.GetValueKind() == System.Text.Json.JsonValueKind.Number && n.ToJsonString() == "0" ? null : v?.DeepClone())]),
        new(Hp + "validation.save_best_model_at_end", "training.validation.save_best_model_at_end", "boolean", "true | false",
            "end with the weights of the best evaluation, not the last step", Upstream: Up(Hp + "save_best_model_at_end", Hp + "load_best_model_at_end")),
        new(Hp + "validation.metric_for_best_model", "training.validation.metric_for_best_model", "string", "val.loss (also val_loss, eval_loss)",
            "metric that picks the best model", Upstream: Up(Hp + "metric_for_best_model")),
        new(Hp + "validation.greater_is_better", "training.validation.greater_is_better", "boolean", "true | false", "whether a higher metric is better",
            Upstream: Up(Hp + "greater_is_better")),
        new(Hp + "train_vision", "training.train_vision", "string", "none | merger | tower (vision models)",
            "what of the Qwen3-VL vision tower is trained besides the language model: nothing (default), the patch mergers, or the whole tower"),
        new(Hp + "vision.min_pixels", "model.min_pixels", "integer", "1024 … 67108864, ≤ max_pixels (vision models)",
            "smallest image area after resizing (default: the model's preprocessor_config.json)"),
        new(Hp + "vision.max_pixels", "model.max_pixels", "integer", "1024 … 67108864 (vision models)",
            "largest image area after resizing; fewer pixels, fewer image tokens (default: the model's preprocessor_config.json)"),
        new(Hp + "vision.max_images_per_message", "model.max_images_per_message", "integer", "1 … 64 (vision models)",
            "image parts kept per message; extra ones are left out with a debug event (default: the registry's, 1 for Qwen3-VL)"),
        new("validation_file_id", "data.validation_path", "file id (TOML: a path, uploaded by the CLI)", "an uploaded, ready file",
            "held-out examples for val.loss", Upstream: [new(Effective + "data.validation_files[0]")]),
        new(Effective + "compute", "compute", "table {gpu_type, gpu_count, nodes}", "any", "requested hardware; recorded, and a warning names what the job actually runs on",
            SettingEffect.Recorded),
        new(Hp + "world_size", "hyperparameters.world_size", "integer", "≥ 1", "number of training processes upstream; a job here runs on one device", SettingEffect.NoEffect),
        new(Hp + "parallelism", "hyperparameters.parallelism", "table of scalars", "use_deepspeed, deepspeed_stage, fsdp, bf16, fp16, tensor_parallel_size, …",
            "multi-GPU and precision knobs of upstream's trainer; activation_checkpointing is honoured, the others have no effect", SettingEffect.NoEffect),
        new(Effective + "data.topology", "data.topology", "table", "any", "upstream's container layout; no effect here", SettingEffect.NoEffect),
    ];

    /// <summary>The entry whose API field is <paramref name="apiField"/>.</summary>
    public static SettingKey Api(string apiField) => All.First(k => k.ApiField == apiField);

    /// <summary>Every upstream spelling that sits at the top level of `hyperparameters` (e.g. "batch_size").</summary>
    public static IReadOnlyList<string> UpstreamHyperparameterKeys { get; } = All
        .SelectMany(k => k.Spellings)
        .Select(s => s.Path)
        .Where(p => p.StartsWith(Hp, StringComparison.Ordinal) && !p[Hp.Length..].Contains('.'))
        .Select(p => p[Hp.Length..])
        .Append("world_size")
        .Distinct()
        .ToList();

    // training.mode = "sft", "sft_offline" and the like only say "supervised fine-tuning" (upstream
    // infers the job type from them): no mode. Any other value is taken as written (and checked).
    public static JsonNode? ModeOf(JsonNode? value) =>
        value is JsonValue v && v.TryGetValue<string>(out var s) && IsJobType(s) ? null : value?.DeepClone();

    // train_kind: upstream's fft / peft / qlora; "sft" says nothing about the mode.
    static JsonNode? TrainKind(JsonNode? value)
    {
        if (value is not JsonValue v || !v.TryGetValue<string>(out var s)) return value?.DeepClone();
        return s.ToLowerInvariant() switch
        {
            "fft" or "full" or "full_finetune" => TrainingModes.FullFinetune,
            "peft" or "lora" => TrainingModes.Lora,
            "qlora" => TrainingModes.Qlora,
            var k when IsJobType(k) => null,
            _ => value.DeepClone(),
        };
    }

    static bool IsJobType(string s) =>
        s.StartsWith("sft", StringComparison.OrdinalIgnoreCase) || s is "supervised_finetune" or "offline";

    // Upstream writes ["all-linear"] where the API takes "all-linear".
    static JsonNode? TargetModules(JsonNode? value) =>
        value is JsonArray { Count: 1 } a && a[0] is JsonValue v && v.TryGetValue<string>(out var s) && s == "all-linear"
            ? JsonValue.Create("all-linear")
            : value?.DeepClone();

    static bool? Bool(JsonNode? v) => v is JsonValue b && b.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False
        ? b.GetValueKind() == System.Text.Json.JsonValueKind.True : null;
}
