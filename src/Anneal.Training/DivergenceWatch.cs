// Warns once when the training loss runs away: a learning rate that is too high makes the loss
// climb far above where it started while staying finite, and such a run would otherwise end
// "succeeded" with a useless model. (A NaN/inf loss fails the job at once, in Trainer.)
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Training;

public sealed class DivergenceWatch
{
    /// <summary>The loss has diverged when it exceeds this multiple of the lowest loss seen so far…</summary>
    public const double Factor = 2.0;
    /// <summary>…and is at least this much above it (tiny losses doubling is not divergence).</summary>
    public const double MinRise = 1.0;

    double _lowest = double.PositiveInfinity;
    long _lowestStep;
    bool _warned;

    public bool Warned => _warned;

    public void Observe(long step, double loss, double learningRate, TrainerEvents events)
    {
        if (!double.IsFinite(loss)) return;
        if (loss < _lowest)
        {
            (_lowest, _lowestStep) = (loss, step);
            return;
        }
        if (_warned || loss < _lowest * Factor || loss - _lowest < MinRise) return;
        _warned = true;
        events.Emit(EventTypes.Diverging,
            $"training loss is diverging: {loss:F4} at step {step}, up from {_lowest:F4} at step {_lowestStep}; learning_rate {learningRate:G3} is likely too high (lower it, or raise warmup_ratio)",
            EventData.ToJson(new DivergingData(step, loss, _lowest, _lowestStep, learningRate)),
            level: "warning");
    }
}
