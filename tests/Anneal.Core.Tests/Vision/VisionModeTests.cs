// Vision mode's settings adjustments: one example per micro-batch, the effective batch kept.
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Vision;

public class VisionModeTests
{
    [Fact]
    public void Qwen3_vl_clamps_batches_to_one_and_raises_accumulation()
    {
        var s = new TrainingSettings { PerDeviceBatch = 4, GradientAccumulationSteps = 2, PerDeviceEvalBatch = 8, Packing = true };
        var (adjusted, notes) = VisionMode.Adjust(s, "Qwen/Qwen3-VL-8B-Instruct");
        Assert.Equal((1, 8, 1, false), (adjusted.PerDeviceBatch, adjusted.GradientAccumulationSteps, adjusted.PerDeviceEvalBatch, adjusted.Packing));
        Assert.Equal(
        [
            "vision mode: per_device_batch 4 → 1 and gradient_accumulation_steps 2 → 8 (same effective batch 8)",
            "vision mode: per_device_eval_batch 8 → 1",
            "vision mode: packing off (one example per micro-batch)",
        ], notes);
    }

    [Theory]
    [InlineData("Qwen/Qwen3-4B")]
    [InlineData("anneal/tiny-qwen3")]
    public void Text_models_are_left_alone(string model)
    {
        var s = new TrainingSettings { PerDeviceBatch = 4, GradientAccumulationSteps = 2 };
        var (adjusted, notes) = VisionMode.Adjust(s, model);
        Assert.Same(s, adjusted);
        Assert.Empty(notes);
    }

    [Fact]
    public void Batch_of_one_needs_no_adjustment() =>
        Assert.Empty(VisionMode.Adjust(new TrainingSettings { PerDeviceBatch = 1 }, "anneal/tiny-qwen3-vl").Adjustments);
}
