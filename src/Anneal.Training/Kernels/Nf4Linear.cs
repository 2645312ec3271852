// y = x · deq(W)ᵀ for a frozen NF4 weight, keeping only the packed weight for backward.
//
// A plain F.linear(x, deq(W)) would save the dequantised weight (2 bytes per parameter in bf16,
// four times the packed weight) until backward, for every linear of every layer. Here the autograd
// node keeps a reference to the packed weight only and dequantises again in backward:
//   forward:  y  = x · deq(W)ᵀ          (…, out)
//   backward: dx = dy · deq(W)          (…, in); no gradient for W (frozen)
// as torchao's LinearNF4 and torchtune's FrozenNF4Linear do. With activation checkpointing the
// recomputed forward dequantises a third time.
using Anneal.Training.Quantization;
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class Nf4Linear
{
    /// <summary>x (…, in) → (…, out) through the frozen weight (out, in).</summary>
    public static Tensor Apply(Tensor x, Nf4Weight weight)
    {
        if (x.shape[^1] != weight.Shape[1])
            throw new ArgumentException($"input has {x.shape[^1]} features; the NF4 weight [{weight.Shape[0]}, {weight.Shape[1]}] expects {weight.Shape[1]}.", nameof(x));
        // Without a gradient to pass back to x, no node is needed and the dequantised weight is freed at once.
        if (!is_grad_enabled() || !x.requires_grad)
        {
            using var scope = NewDisposeScope();
            return nn.functional.linear(x, weight.Dequantize(x.dtype)).MoveToOuterDisposeScope();
        }
        ReturnedGradients.ReleasePrevious();
        return Nf4LinearFunction.apply(x, weight);
    }
}

/// <summary>vars = (x, Nf4Weight).</summary>
sealed class Nf4LinearFunction : TorchSharp.torch.autograd.SingleTensorFunction<Nf4LinearFunction>
{
    public override string Name => "Nf4Linear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight) = ((Tensor)vars[0], (Nf4Weight)vars[1]);
        ctx.save_data("weight", weight);    // a managed reference: nothing for libtorch to keep
        using var scope = NewDisposeScope();
        return nn.functional.linear(x, weight.Dequantize(x.dtype)).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        var weight = (Nf4Weight)ctx.get_data("weight");
        Tensor gradInput;
        using (var scope = NewDisposeScope())
            gradInput = matmul(gradOutput, weight.Dequantize(gradOutput.dtype)).MoveToOuterDisposeScope();   // (…, in)
        gradOutput.Dispose();
        return [ReturnedGradients.Keep(gradInput)!, null!];
    }
}
