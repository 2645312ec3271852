// Turns a job's `hyperparameters` JSON into TrainingSettings, or into errors that name the key,
// the value and what is allowed (unknown keys get a "did you mean"). The TOML loader builds the
// same shape, so config files and raw API payloads are checked by the same rules.
//
// Shape (flat keys, three nested objects):
//   { n_epochs | total_steps (aliases train_steps, steps), per_device_batch, per_device_eval_batch,
//     gradient_accumulation_steps, global_batch, sequence_length, learning_rate, warmup_ratio,
//     weight_decay, lr_scheduler, max_grad_norm, seed, save_steps, activation_checkpointing,
//     training_mode, use_qlora, packing,
//     lora: {r, alpha, dropout, target_modules}, validation: {enabled, evaluation_strategy,
//     eval_steps, save_best_model_at_end, metric_for_best_model, greater_is_better},
//     parallelism: {any key: scalar} }
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Training;

public static class HyperparameterParser
{
    public const string Prefix = "hyperparameters";

    static readonly string[] StepKeys = ["total_steps", "train_steps", "steps"];

    /// <summary>Every key accepted at the top level of `hyperparameters`.</summary>
    public static readonly IReadOnlyList<string> TopLevelKeys =
    [
        "n_epochs", "total_steps", "train_steps", "steps", "per_device_batch", "per_device_eval_batch",
        "gradient_accumulation_steps", "global_batch", "sequence_length", "learning_rate", "warmup_ratio",
        "weight_decay", "lr_scheduler", "max_grad_norm", "seed", "save_steps", "activation_checkpointing",
        "training_mode", "use_qlora", "packing", "lora", "validation", "parallelism",
    ];

    public static readonly IReadOnlyList<string> LoraKeys = ["r", "alpha", "dropout", "target_modules"];

    public static readonly IReadOnlyList<string> ValidationKeys =
        ["enabled", "evaluation_strategy", "eval_steps", "save_best_model_at_end", "metric_for_best_model", "greater_is_better"];

    public static readonly IReadOnlyList<string> LrSchedulers = ["linear", "cosine", "constant"];
    public static readonly IReadOnlyList<string> CheckpointingModes = ["auto", "on", "off"];
    public static readonly IReadOnlyList<string> Modes = [TrainingModes.FullFinetune, TrainingModes.Lora, TrainingModes.Qlora];
    public static readonly IReadOnlyList<string> EvaluationStrategies = ["steps", "epoch", "no"];

    /// <summary>Metric names accepted for metric_for_best_model; all mean the validation loss.</summary>
    public static readonly IReadOnlyList<string> BestModelMetrics = ["val.loss", "val_loss", "eval_loss"];

    public static (TrainingSettings? Settings, IReadOnlyList<ErrorItem> Errors) Parse(JsonObject? hyperparameters)
    {
        var errors = new List<ErrorItem>();
        if (hyperparameters is null)
        {
            errors.Add(new ErrorItem(null, Prefix, "is required: give at least one of n_epochs or total_steps (aliases train_steps, steps)"));
            return (null, errors);
        }

        var r = new JsonFields(hyperparameters, Prefix, errors);
        r.RejectUnknown(TopLevelKeys);

        var nEpochs = r.Number("n_epochs", min: 0, minExclusive: true, max: 1000);
        int? totalSteps = null;
        string? stepsKey = null;
        foreach (var key in StepKeys)
        {
            if (r.Int(key, 1, 100_000_000) is not { } v) continue;
            if (totalSteps is { } previous && previous != v)
                errors.Add(new ErrorItem(null, r.Path(key), $"{v} conflicts with {stepsKey} = {previous}; give only one of {string.Join(", ", StepKeys)}"));
            else
            {
                totalSteps = v;
                stepsKey = key;
            }
        }
        if (nEpochs is null && totalSteps is null && !StepKeys.Append("n_epochs").Any(hyperparameters.ContainsKey))
            errors.Add(new ErrorItem(null, Prefix, "give at least one of n_epochs or total_steps (aliases train_steps, steps)"));

        var perDevice = r.Int("per_device_batch", 1, 4096);
        var perDeviceEval = r.Int("per_device_eval_batch", 1, 4096);
        var accumulation = r.Int("gradient_accumulation_steps", 1, 65536);
        var globalBatch = r.Int("global_batch", 1, 1 << 20);
        var sequenceLength = r.Int("sequence_length", 16, 262_144);
        var learningRate = r.Number("learning_rate", min: 0, minExclusive: true, max: 1);
        var warmup = r.Number("warmup_ratio", 0, max: 1);
        var weightDecay = r.Number("weight_decay", 0, max: 1);
        var scheduler = r.Choice("lr_scheduler", LrSchedulers);
        var maxGradNorm = r.Number("max_grad_norm", 0, max: 1e6);
        var seed = r.Int("seed", 0, int.MaxValue);
        var saveSteps = r.Int("save_steps", 1, 100_000_000);
        var checkpointing = r.Choice("activation_checkpointing", CheckpointingModes);
        var mode = r.Choice("training_mode", Modes);
        var useQlora = r.Bool("use_qlora");
        var packing = r.Bool("packing");
        // QLoRA is LoRA over a 4-bit base: use_qlora = true selects it whatever the mode says (the
        // spec's config keeps mode = "full_finetune" next to the flag).
        if (useQlora == true)
            mode = TrainingModes.Qlora;

        // Effective batch on one device: global_batch = per_device_batch × gradient_accumulation_steps.
        if (globalBatch is { } g)
        {
            if (accumulation is null)
            {
                var pd = perDevice ?? 1;
                if (g % pd != 0)
                    errors.Add(new ErrorItem(null, r.Path("global_batch"), $"{g} is not a multiple of per_device_batch {pd}"));
                else
                    accumulation = g / pd;
            }
            else if (perDevice is null)
            {
                if (g % accumulation.Value != 0)
                    errors.Add(new ErrorItem(null, r.Path("global_batch"), $"{g} is not a multiple of gradient_accumulation_steps {accumulation}"));
                else
                    perDevice = g / accumulation.Value;
            }
            else if (perDevice.Value * accumulation.Value != g)
                errors.Add(new ErrorItem(null, r.Path("global_batch"),
                    $"{g} does not equal per_device_batch {perDevice} × gradient_accumulation_steps {accumulation} = {perDevice.Value * accumulation.Value}; give two of the three or make them agree"));
        }

        var lora = ParseLora(r.Object("lora"), errors);
        var validation = ParseValidation(r.Object("validation"), errors);
        if (r.Object("parallelism") is { } parallelism)
        {
            // Free-form knobs for multi-GPU runs; only scalars make sense there.
            foreach (var (key, value) in parallelism)
                if (value is null or JsonObject or JsonArray)
                    errors.Add(new ErrorItem(null, $"{Prefix}.parallelism.{key}", $"must be a string, number or boolean, got {JsonFields.Describe(value)}"));
        }

        if (errors.Count > 0) return (null, errors);
        var defaults = new TrainingSettings();
        return (new TrainingSettings
        {
            Mode = mode ?? defaults.Mode,
            NEpochs = nEpochs,
            TotalSteps = totalSteps,
            PerDeviceBatch = perDevice ?? defaults.PerDeviceBatch,
            PerDeviceEvalBatch = perDeviceEval ?? defaults.PerDeviceEvalBatch,
            GradientAccumulationSteps = accumulation ?? defaults.GradientAccumulationSteps,
            GlobalBatch = globalBatch,
            SequenceLength = sequenceLength,
            LearningRate = learningRate ?? defaults.LearningRate,
            WarmupRatio = warmup ?? defaults.WarmupRatio,
            WeightDecay = weightDecay ?? defaults.WeightDecay,
            LrScheduler = scheduler ?? defaults.LrScheduler,
            MaxGradNorm = maxGradNorm ?? defaults.MaxGradNorm,
            Seed = seed ?? defaults.Seed,
            SaveSteps = saveSteps,
            ActivationCheckpointing = checkpointing ?? defaults.ActivationCheckpointing,
            Packing = packing ?? defaults.Packing,
            Lora = lora ?? defaults.Lora,
            Validation = validation ?? defaults.Validation,
        }, errors);
    }

    static LoraSettings? ParseLora(JsonObject? obj, List<ErrorItem> errors)
    {
        if (obj is null) return null;
        var r = new JsonFields(obj, Prefix + ".lora", errors);
        r.RejectUnknown(LoraKeys);
        var d = new LoraSettings();
        var rank = r.Int("r", 1, 1024);
        var alpha = r.Number("alpha", 0, minExclusive: true, max: 65536);
        var dropout = r.Number("dropout", 0, max: 1, maxExclusive: true);
        IReadOnlyList<string>? targets = null;
        if (obj["target_modules"] is { } node)
        {
            var path = r.Path("target_modules");
            if (node is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String && v.GetValue<string>() == "all-linear")
                targets = null; // the default: every linear projection
            else if (node is JsonArray array && array.Count > 0)
            {
                var list = new List<string>();
                for (var i = 0; i < array.Count; i++)
                {
                    if (array[i] is JsonValue item && item.GetValueKind() == System.Text.Json.JsonValueKind.String)
                    {
                        var name = item.GetValue<string>();
                        if (LoraSettings.AllLinear.Contains(name)) list.Add(name);
                        else errors.Add(new ErrorItem(null, $"{path}[{i}]",
                            $"\"{name}\" is not a Qwen3 linear layer{Suggest.DidYouMean(name, LoraSettings.AllLinear)}; allowed: {string.Join(", ", LoraSettings.AllLinear)}"));
                    }
                    else errors.Add(new ErrorItem(null, $"{path}[{i}]", $"must be a string, got {JsonFields.Describe(array[i])}"));
                }
                targets = list;
            }
            else errors.Add(new ErrorItem(null, path,
                $"must be a non-empty list of module names ({string.Join(", ", LoraSettings.AllLinear)}) or \"all-linear\", got {JsonFields.Describe(node)}"));
        }
        return new LoraSettings(rank ?? d.R, alpha ?? d.Alpha, dropout ?? d.Dropout, targets);
    }

    static ValidationSettings? ParseValidation(JsonObject? obj, List<ErrorItem> errors)
    {
        if (obj is null) return null;
        var r = new JsonFields(obj, Prefix + ".validation", errors);
        r.RejectUnknown(ValidationKeys);
        var d = new ValidationSettings();
        var enabled = r.Bool("enabled");
        var strategy = r.Choice("evaluation_strategy", EvaluationStrategies);
        var evalSteps = r.Int("eval_steps", 1, 100_000_000);
        var saveBest = r.Bool("save_best_model_at_end");
        var metric = r.Choice("metric_for_best_model", BestModelMetrics);
        var greater = r.Bool("greater_is_better");
        return new ValidationSettings(
            enabled ?? d.Enabled,
            strategy ?? d.EvaluationStrategy,
            evalSteps,
            saveBest ?? d.SaveBestModelAtEnd,
            metric is null ? d.MetricForBestModel : "val.loss",
            greater ?? d.GreaterIsBetter);
    }
}
