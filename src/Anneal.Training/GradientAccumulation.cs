// One optimizer step's forward and backward over its micro-batches, whatever the model and batch
// shape (the text recipe's padded rows, the vision recipe's one example with images): each
// micro-batch's summed token loss is divided by the trained tokens of the WHOLE step before
// backward, so the gradients add up to those of one big batch; with fp32 gradient accumulation the
// optimizer folds each micro-batch's bf16 gradients into its fp32 sum. Returns the step's mean token loss.
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training;

public static class GradientAccumulation
{
    public static double Step<TBatch>(IReadOnlyList<TBatch> batches, int trainedTokens, Func<TBatch, Tensor> tokenLossSum, Device device, FlatAdamW? optimizer = null)
    {
        using var scope = NewDisposeScope();
        var total = torch.zeros(1, dtype: ScalarType.Float64, device: device);
        foreach (var b in batches)
        {
            using var inner = NewDisposeScope();
            var sum = tokenLossSum(b);
            (sum / trainedTokens).backward();
            optimizer?.AccumulateMicroBatch();
            total.add_(sum.detach().to(ScalarType.Float64));
        }
        return total.item<double>() / trainedTokens;
    }
}
