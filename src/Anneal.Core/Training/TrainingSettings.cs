// The typed form of a job's `hyperparameters` object: what the server validates at job creation
// and what the trainer runs. Keys and ranges: DESIGN.md §5. The TOML loader (Config/) produces the
// JSON form; HyperparameterParser turns JSON into this record or into named errors.
namespace Anneal.Core.Training;

public static class TrainingModes
{
    public const string FullFinetune = "full_finetune";
    public const string Lora = "lora";
    public const string Qlora = "qlora";
}

public sealed record LoraSettings(
    int R = 16,
    double Alpha = 32,
    double Dropout = 0.0,
    IReadOnlyList<string>? TargetModules = null)
{
    /// <summary>All linear projections of a Qwen3 decoder layer ("all-linear").</summary>
    public static readonly IReadOnlyList<string> AllLinear =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public IReadOnlyList<string> Targets => TargetModules ?? AllLinear;
}

public sealed record ValidationSettings(
    bool Enabled = false,
    string EvaluationStrategy = "steps",
    int? EvalSteps = null,
    bool SaveBestModelAtEnd = false,
    string MetricForBestModel = "val.loss",
    bool GreaterIsBetter = false);

/// <summary>
/// Everything the trainer needs to know about how to train. Either <see cref="NEpochs"/> or
/// <see cref="TotalSteps"/> is set (the TOML/JSON aliases train_steps and steps map to TotalSteps).
/// </summary>
public sealed record TrainingSettings
{
    public string Mode { get; init; } = TrainingModes.FullFinetune;
    public double? NEpochs { get; init; }
    public int? TotalSteps { get; init; }
    public int PerDeviceBatch { get; init; } = 1;
    public int PerDeviceEvalBatch { get; init; } = 1;
    public int GradientAccumulationSteps { get; init; } = 1;
    public int? GlobalBatch { get; init; }
    public int? SequenceLength { get; init; }
    public double LearningRate { get; init; } = 1e-5;
    public double WarmupRatio { get; init; }
    public double WeightDecay { get; init; }
    /// <summary>"linear", "cosine" or "constant" (with warmup in each case).</summary>
    public string LrScheduler { get; init; } = "linear";
    public double MaxGradNorm { get; init; } = 1.0;
    public int Seed { get; init; } = 42;
    public LoraSettings Lora { get; init; } = new();
    public ValidationSettings Validation { get; init; } = new();
    /// <summary>Save a checkpoint every N optimizer steps (null: only at the end).</summary>
    public int? SaveSteps { get; init; }
    /// <summary>Per-layer activation checkpointing: "auto", "on" or "off".</summary>
    public string ActivationCheckpointing { get; init; } = "auto";
    /// <summary>Optimizer state: "exact" (fp32), "lean" (bf16 moments, stochastic rounding) or "auto" (exact when it fits).</summary>
    public string OptimizerPrecision { get; init; } = OptimizerPrecisions.Auto;
    /// <summary>
    /// Pack several examples into each row of sequence_length tokens (block-diagonal attention, no
    /// attention across examples) instead of length-bucketed rows of one example each.
    /// </summary>
    public bool Packing { get; init; }
}
