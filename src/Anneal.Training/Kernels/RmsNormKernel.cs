// RMSNorm with a hand-written backward that keeps only the input and one fp32 scale per row.
//
// Qwen3 normalises in fp32 and casts back before the weight (fp64 inputs stay fp64 throughout, so
// the kernel can be checked against autograd to rounding error):
//   r = rsqrt(mean(x²) + eps)          (…, 1) fp32, x in fp32
//   n = (x·r).to(dtype)                (…, D)
//   y = w · n
// Composed from tensor ops, autograd keeps an fp32 copy of x, x·r in fp32 and n for backward (the
// f·D + 2·e·D per row that the memory model used to count) and runs ~15 small kernels backward.
// This node keeps x (which the caller usually holds anyway: the residual stream or a projection's
// output) and r, and forms the gradients directly (n recomputed from x and r):
//   dn  = (dy · w) in fp32
//   dx  = r · (dn − n·mean(dn·n))      (n in fp32 here)
//   dw  = Σ_rows dy · n                (summed in fp32)
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class RmsNormKernel
{
    /// <summary>
    /// y = w · (x · rsqrt(mean(x²) + eps)).to(x.dtype), normalised over the last dimension in fp32.
    /// x (…, D), w (D) of x's dtype. Differentiable with respect to both.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor weight, double eps)
    {
        Validate(x, weight);
        if (!is_grad_enabled() || (!x.requires_grad && !weight.requires_grad))
        {
            using var scope = NewDisposeScope();
            return Forward(x, weight, eps).Output.MoveToOuterDisposeScope();
        }
        ReturnedGradients.ReleasePrevious();
        return RmsNormFunction.apply(x, weight, eps);
    }

    /// <summary>The same norm composed from tensor ops under plain autograd (reference for tests and benchmarks).</summary>
    public static Tensor Reference(Tensor x, Tensor weight, double eps)
    {
        Validate(x, weight);
        using var scope = NewDisposeScope();
        var h = x.to(ComputeType(x));
        var variance = h.pow(2).mean([-1L], keepdim: true);
        h = h * rsqrt(variance + eps);
        return (weight * h.to(x.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>Output and the fp32 row scale r (…, 1). Five kernels in fp32 input, seven otherwise.</summary>
    internal static (Tensor Output, Tensor Rstd) Forward(Tensor x, Tensor weight, double eps)
    {
        var h = x.to(ComputeType(x));
        var rstd = h.square().mean([-1L], keepdim: true).add_(eps).rsqrt_();
        var y = (h * rstd).to(x.dtype).mul_(weight);
        return (y, rstd);
    }

    /// <summary>fp32, or fp64 for fp64 inputs.</summary>
    internal static ScalarType ComputeType(Tensor x) => x.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    static void Validate(Tensor x, Tensor weight)
    {
        if (weight.dim() != 1 || x.dim() < 1 || weight.shape[0] != x.shape[^1])
            throw new ArgumentException($"RMSNorm weight must be [{(x.dim() < 1 ? "?" : x.shape[^1])}] for input [{string.Join(", ", x.shape)}]; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        if (weight.dtype != x.dtype)
            throw new ArgumentException($"RMSNorm input ({x.dtype}) and weight ({weight.dtype}) must have the same dtype.", nameof(weight));
    }
}

/// <summary>vars = (x, weight, eps).</summary>
sealed class RmsNormFunction : autograd.SingleTensorFunction<RmsNormFunction>
{
    public override string Name => "RmsNorm";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight, eps) = ((Tensor)vars[0], (Tensor)vars[1], (double)vars[2]);
        using var scope = NewDisposeScope();
        var (y, rstd) = RmsNormKernel.Forward(x, weight, eps);
        // TorchSharp saves the variables after forward returns: rstd must outlive this scope
        // (the caller's scope frees the handle; the saved variable keeps its own reference).
        ctx.save_for_backward([x, weight, rstd.MoveToOuterDisposeScope()]);
        ctx.save_data("needs", (x.requires_grad, weight.requires_grad));
        return y.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        Tensor? gradInput = null, gradWeight = null;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (x, weight, rstd) = (saved[0], saved[1], saved[2]);
            var (needInput, needWeight) = ((bool, bool))ctx.get_data("needs");
            var compute = RmsNormKernel.ComputeType(x);
            var n = x.to(compute) * rstd;                                                 // (…, D) fp32, never x itself
            if (needWeight)
            {
                // Autograd's order: n is rounded to the weight's dtype before the product.
                var nCast = x.dtype == compute ? n : n.to(x.dtype).to(compute);
                var rows = gradOutput.to(compute).mul(nCast).reshape(-1, x.shape[^1]);
                gradWeight = rows.sum(dim: 0L).to(weight.dtype).MoveToOuterDisposeScope();     // (D)
            }
            if (needInput)
            {
                var dn = (gradOutput * weight).to(compute);                               // (…, D)
                var dot = (dn * n).mean([-1L], keepdim: true);                            // (…, 1)
                gradInput = dn.sub_(n.mul_(dot)).mul_(rstd).to(x.dtype).MoveToOuterDisposeScope();
            }
        }
        gradOutput.Dispose();
        return [ReturnedGradients.Keep(gradInput)!, ReturnedGradients.Keep(gradWeight)!, null!];
    }
}
