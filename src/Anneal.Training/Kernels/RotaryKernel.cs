// Rotary position embedding application with a hand-written backward that keeps nothing per call.
//
// Hugging Face's y = x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁] is, with the halves
// swapped by one roll and the sign folded into sin,
//   y  = x·cos + roll(x)·s,            roll(x) = [x₂, x₁],  s = [−sin₁, sin₂]
// The same products and the same sum, so the result is bit-identical. A roll by half the head
// dimension is its own inverse, so
//   dx = dy·cos + roll(dy·s)
// Backward needs only cos and sin (s is made again from sin): one pair per forward pass, shared by every layer, instead of x,
// the rotated copy and the two products autograd keeps per layer for queries and keys.
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class RotaryKernel
{
    /// <summary>x·cos + rotate_half(x)·sin. x (B, heads, T, hd); cos, sin (B, T, hd) of x's dtype.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        Validate(x, cos, sin);
        if (!is_grad_enabled() || !x.requires_grad)
        {
            using var scope = NewDisposeScope();
            return Forward(x, cos.unsqueeze(1), SignedSin(sin).unsqueeze(1)).MoveToOuterDisposeScope();
        }
        ReturnedGradients.ReleasePrevious();
        return RotaryFunction.apply(x, cos, sin);
    }

    /// <summary>Hugging Face's apply_rotary_pos_emb composed from tensor ops (reference for tests and benchmarks).</summary>
    public static Tensor Reference(Tensor x, Tensor cos, Tensor sin)
    {
        Validate(x, cos, sin);
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], dim: -1);
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }

    /// <summary>[−sin₁, sin₂]: the sign of rotate_half moved onto sin.</summary>
    internal static Tensor SignedSin(Tensor sin)
    {
        var half = sin.shape[^1] / 2;
        return cat([-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)], dim: -1);
    }

    /// <summary>x·cos + roll(x)·s with cos, s already broadcastable to x.</summary>
    internal static Tensor Forward(Tensor x, Tensor cos, Tensor signedSin) =>
        (x * cos).add_(x.roll(x.shape[^1] / 2, -1).mul_(signedSin));

    static void Validate(Tensor x, Tensor cos, Tensor sin)
    {
        if (x.dim() != 4 || x.shape[^1] % 2 != 0)
            throw new ArgumentException($"rotary input must be [batch, heads, tokens, head_dim] with an even head_dim; got [{string.Join(", ", x.shape)}].", nameof(x));
        long[] expected = [x.shape[0], x.shape[2], x.shape[3]];
        if (!cos.shape.SequenceEqual(expected) || !sin.shape.SequenceEqual(expected))
            throw new ArgumentException($"rotary cos and sin must be [{string.Join(", ", expected)}] for input [{string.Join(", ", x.shape)}]; got [{string.Join(", ", cos.shape)}] and [{string.Join(", ", sin.shape)}].");
    }
}

/// <summary>vars = (x, cos, sin).</summary>
sealed class RotaryFunction : autograd.SingleTensorFunction<RotaryFunction>
{
    public override string Name => "Rotary";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, cos, sin) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        // cos and sin are the caller's, shared by every layer of the forward pass: saving them
        // stores nothing new. The signed sin is made again in backward (B·T·hd, two small kernels).
        ctx.save_for_backward([cos, sin]);
        using var scope = NewDisposeScope();
        return RotaryKernel.Forward(x, cos.unsqueeze(1), RotaryKernel.SignedSin(sin).unsqueeze(1)).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        Tensor gradInput;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (c, s) = (saved[0].unsqueeze(1), RotaryKernel.SignedSin(saved[1]).unsqueeze(1));
            var swapped = (gradOutput * s).roll(gradOutput.shape[^1] / 2, -1);
            gradInput = swapped.add_(gradOutput * c).MoveToOuterDisposeScope();
        }
        gradOutput.Dispose();
        return [ReturnedGradients.Keep(gradInput)!, null!, null!];
    }
}
