// SwiGLU's gate, silu(g)·u, with a hand-written backward that keeps only g and u.
//
// Composed from tensor ops, autograd keeps g, silu(g) and u for the product and silu's backward
// (and the product itself for down_proj, which the caller's linear keeps anyway): 3·e·I per token
// here. This node keeps g and u (2·e·I) and recomputes the sigmoid in backward:
//   σ = sigmoid(g),  silu = g·σ
//   du = dy·silu
//   dg = dy·u·σ·(1 + g·(1 − σ))
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class SwiGluKernel
{
    /// <summary>silu(gate) · up, element-wise; gate and up of one shape and dtype.</summary>
    public static Tensor Apply(Tensor gate, Tensor up)
    {
        Validate(gate, up);
        if (!is_grad_enabled() || (!gate.requires_grad && !up.requires_grad))
        {
            using var scope = NewDisposeScope();
            return Forward(gate, up).MoveToOuterDisposeScope();
        }
        ReturnedGradients.ReleasePrevious();
        return SwiGluFunction.apply(gate, up);
    }

    /// <summary>The same product under plain autograd (reference for tests and benchmarks).</summary>
    public static Tensor Reference(Tensor gate, Tensor up)
    {
        Validate(gate, up);
        return nn.functional.silu(gate) * up;
    }

    internal static Tensor Forward(Tensor gate, Tensor up) => nn.functional.silu(gate).mul_(up);

    static void Validate(Tensor gate, Tensor up)
    {
        if (!gate.shape.SequenceEqual(up.shape) || gate.dtype != up.dtype)
            throw new ArgumentException($"SwiGLU gate and up must have one shape and dtype; got [{string.Join(", ", gate.shape)}] {gate.dtype} and [{string.Join(", ", up.shape)}] {up.dtype}.");
    }
}

/// <summary>vars = (gate, up).</summary>
sealed class SwiGluFunction : autograd.SingleTensorFunction<SwiGluFunction>
{
    public override string Name => "SwiGlu";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (gate, up) = ((Tensor)vars[0], (Tensor)vars[1]);
        ctx.save_for_backward([gate, up]);
        ctx.save_data("needs", (gate.requires_grad, up.requires_grad));
        using var scope = NewDisposeScope();
        return SwiGluKernel.Forward(gate, up).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        Tensor? gradGate = null, gradUp = null;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (gate, up) = (saved[0], saved[1]);
            var (needGate, needUp) = ((bool, bool))ctx.get_data("needs");
            var sigma = gate.sigmoid();
            if (needUp) gradUp = (gate * sigma).mul_(gradOutput).MoveToOuterDisposeScope();
            if (needGate)
            {
                // σ·(1 + g·(1 − σ)) = σ + silu·(1 − σ)
                var dsilu = (1 - sigma).mul_(gate).add_(1).mul_(sigma);
                gradGate = dsilu.mul_(up).mul_(gradOutput).MoveToOuterDisposeScope();
            }
        }
        gradOutput.Dispose();
        return [ReturnedGradients.Keep(gradGate)!, ReturnedGradients.Keep(gradUp)!];
    }
}
