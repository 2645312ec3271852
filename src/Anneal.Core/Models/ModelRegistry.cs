// The base models Anneal knows (GET /api/models): the spec's Qwen3 and Qwen3-VL families plus the
// built-in tiny test model. `Trainable` says honestly whether this build's trainer can train it.
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Core.Models;

public sealed record ModelInfo(
    string Id,
    string Family,
    double ParametersBillions,
    int ContextLength,
    bool SupportsVision,
    int MaxImagesPerMessage,
    string Precision,
    IReadOnlyList<string> TrainingModes,
    bool Trainable,
    string? TrainableNote,
    bool TestModel = false)
{
    public BaseModelObject ToWire() => new(Id, "model", Family, ParametersBillions, ContextLength,
        SupportsVision, MaxImagesPerMessage, Precision, TrainingModes, Trainable, TrainableNote, TestModel);
}

public static class ModelRegistry
{
    public const string TinyModelId = "anneal/tiny-qwen3";
    public const string TinyVisionModelId = "anneal/tiny-qwen3-vl";

    static readonly string[] DenseModes = [Training.TrainingModes.FullFinetune, Training.TrainingModes.Lora, Training.TrainingModes.Qlora];
    const string MoeNote = "mixture-of-experts layers are not yet implemented in the trainer";
    const string VisionMoeNote = "Qwen3-VL mixture-of-experts layers are not yet implemented in the trainer";
    static readonly string[] VisionModes = [Training.TrainingModes.FullFinetune, Training.TrainingModes.Lora];
    const string VisionQloraNote = "qlora is not yet supported for Qwen3-VL (full_finetune and lora are)";

    static ModelInfo Dense(string id, double b, int ctx) =>
        new(id, "qwen3", b, ctx, false, 0, "bf16", DenseModes, true, null);

    const string Fp8Note = "FP8 (block-quantised) checkpoints are not loaded by the trainer; train the bf16 model of the same name without -FP8";

    /// <summary>The -FP8 form of a model: the same architecture, weights the trainer cannot load.</summary>
    static ModelInfo Fp8(ModelInfo m) => m with
    {
        Id = m.Id + "-FP8",
        Precision = "fp8",
        Trainable = false,
        TrainableNote = m.Trainable ? Fp8Note : $"{m.TrainableNote}; {Fp8Note}",
    };

    static ModelInfo Moe(string id, double b, int ctx) =>
        new(id, "qwen3_moe", b, ctx, false, 0, "bf16", DenseModes, false, MoeNote);

    static ModelInfo Vl(string id, double b, bool moe) =>
        new(id, moe ? "qwen3_vl_moe" : "qwen3_vl", b, 262144, true, 1, "bf16", VisionModes, !moe, moe ? VisionMoeNote : VisionQloraNote);

    public static readonly IReadOnlyList<ModelInfo> All = BuildAll();

    static List<ModelInfo> BuildAll()
    {
        var list = new List<ModelInfo>
        {
            Dense("Qwen/Qwen3-0.6B", 0.6, 40960),
            Dense("Qwen/Qwen3-1.7B", 1.7, 40960),
            Dense("Qwen/Qwen3-4B", 4.0, 40960),
            Dense("Qwen/Qwen3-8B", 8.2, 40960),
            Dense("Qwen/Qwen3-14B", 14.8, 40960),
            Dense("Qwen/Qwen3-32B", 32.8, 40960),
            new("Qwen/Qwen3-30B-A3B", "qwen3_moe", 30.5, 40960, false, 0, "bf16", DenseModes, false, MoeNote),
        };
        foreach (var size in new[] { "2B", "4B", "8B", "32B" })
        foreach (var variant in new[] { "Instruct", "Thinking" })
            list.Add(Vl($"Qwen/Qwen3-VL-{size}-{variant}", double.Parse(size.TrimEnd('B'), System.Globalization.CultureInfo.InvariantCulture), false));
        foreach (var variant in new[] { "Instruct", "Thinking" })
            list.Add(Vl($"Qwen/Qwen3-VL-30B-A3B-{variant}", 30.5, true));
        // The rest of the upstream SFT allowlist (UPSTREAM.md §6): the 2507 refresh (4B dense: the
        // Qwen3 architecture, trainable; MoE sizes not yet), the Coder models, the largest VL
        // models, and the -FP8 forms, each with the reason it is or is not trainable here.
        var dense2507 = new[] { "Qwen/Qwen3-4B-2507", "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507" }
            .Select(id => Dense(id, 4.0, 262144)).ToList();
        list.AddRange(dense2507);
        list.AddRange(dense2507.Skip(1).Select(Fp8));
        var moe = new List<ModelInfo>();
        foreach (var variant in new[] { "Instruct", "Thinking" })
        {
            moe.Add(Moe($"Qwen/Qwen3-30B-A3B-{variant}-2507", 30.5, 262144));
            moe.Add(Moe($"Qwen/Qwen3-235B-A22B-{variant}-2507", 235.1, 262144));
        }
        moe.Add(Moe("Qwen/Qwen3-Coder-30B-A3B-Instruct", 30.5, 262144));
        moe.Add(Moe("Qwen/Qwen3-Coder-480B-A35B-Instruct", 480.2, 262144));
        list.AddRange(moe);
        list.AddRange(moe.Select(Fp8));
        foreach (var variant in new[] { "Instruct", "Thinking" })
            list.Add(Vl($"Qwen/Qwen3-VL-235B-A22B-{variant}", 235.7, true));
        list.Add(new(TinyModelId, "qwen3", 0.002, 2048, false, 0, "fp32",
            DenseModes, true,
            "built-in test model with random weights, generated locally", TestModel: true));
        list.Add(new(TinyVisionModelId, "qwen3_vl", 0.001, 2048, true, 2, "fp32",
            [Training.TrainingModes.FullFinetune, Training.TrainingModes.Lora], true,
            "built-in Qwen3-VL test model with random weights, generated locally", TestModel: true));
        return list;
    }

    /// <summary>The built-in test models (generated by the trainer into the models folder, never downloaded).</summary>
    public static bool IsBuiltIn(string id) => Find(id)?.TestModel == true;

    public static ModelInfo? Find(string id) =>
        All.FirstOrDefault(m => string.Equals(m.Id, id, StringComparison.OrdinalIgnoreCase));

    /// <summary>Qwen3-VL checkpoints switch the pipeline into vision mode (spec: "Qwen/Qwen3-VL-*").</summary>
    public static bool IsVision(string id) => Find(id)?.SupportsVision
        ?? id.StartsWith("Qwen/Qwen3-VL-", StringComparison.OrdinalIgnoreCase);
}
