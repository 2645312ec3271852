// What a training recipe says after each optimizer step, in one place for the text recipe
// (Trainer) and the vision recipe (VisionTrainer): the sft.progress event's fields, and the stop
// with advice when the loss or the gradient norm is no longer finite.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training;

public static class StepReport
{
    /// <summary>The data of an sft.progress event (the message is "step N/T loss L"): epoch, throughput and time left from the step's numbers.</summary>
    public static JsonObject Progress(int step, int totalSteps, int stepsPerEpoch, double loss, double lr, double gradNorm,
        int stepTokens, double secondsPerStep, long trainedTokens) =>
        EventData.ToJson(new ProgressData(step, totalSteps, Math.Round((double)step / stepsPerEpoch, 4), loss, lr, double.IsFinite(gradNorm) ? gradNorm : null,
            Math.Round(stepTokens / Math.Max(1e-9, secondsPerStep), 1), Math.Round((totalSteps - step) * secondsPerStep, 1), trainedTokens));

    /// <summary>Ends the job as a configuration problem when the step's loss or gradient norm is NaN or infinite.</summary>
    public static void ThrowIfDiverged(int step, double loss, double gradNorm, TrainingSettings s, double lr)
    {
        if (!double.IsFinite(loss) || !double.IsFinite(gradNorm))
            throw TrainerUserException.Config($"training diverged at step {step}: loss {loss}, grad_norm {gradNorm} with learning_rate {s.LearningRate} (lr now {lr:G3}); lower learning_rate, raise warmup_ratio, or set max_grad_norm");
    }
}
