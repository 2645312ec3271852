// Vision mode (spec: "Vision-language (Qwen3-VL)"): switched on by the model alone, through the
// registry. Each image is its own variable-length patch set, so micro-batches hold one example:
// per_device_batch and per_device_eval_batch become 1 and gradient_accumulation_steps grows by the
// old per_device_batch, which keeps the effective batch. The trainer emits each adjustment as an
// event and `anneal train --dry-run` prints them.
using Anneal.Core.Models;

namespace Anneal.Core.Training;

public static class VisionMode
{
    /// <summary>The settings a vision job trains with, and one sentence per change made.</summary>
    public static (TrainingSettings Settings, List<string> Adjustments) Adjust(TrainingSettings s, string model)
    {
        var notes = new List<string>();
        if (!ModelRegistry.IsVision(model)) return (s, notes);
        if (s.PerDeviceBatch > 1)
        {
            var accumulation = s.GradientAccumulationSteps * s.PerDeviceBatch;
            notes.Add($"vision mode: per_device_batch {s.PerDeviceBatch} → 1 and gradient_accumulation_steps {s.GradientAccumulationSteps} → {accumulation} (same effective batch {accumulation})");
            s = s with { PerDeviceBatch = 1, GradientAccumulationSteps = accumulation };
        }
        if (s.PerDeviceEvalBatch > 1)
        {
            notes.Add($"vision mode: per_device_eval_batch {s.PerDeviceEvalBatch} → 1");
            s = s with { PerDeviceEvalBatch = 1 };
        }
        if (s.Packing)
        {
            notes.Add("vision mode: packing off (one example per micro-batch)");
            s = s with { Packing = false };
        }
        return (s, notes);
    }
}
