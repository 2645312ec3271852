// Stochastic rounding of fp32 values to bf16 with plain libtorch ops (TorchSharp cannot
// reinterpret fp32 bits as int32, the usual trick). For x between its two bf16 neighbours lo < hi:
//   round(x) = hi with probability (x − lo)/(hi − lo), else lo,   so E[round(x)] = x.
// The nearest bf16 value r = bf16(x) is one neighbour; the other is r ± the spacing of bf16 at r
// in the direction of x. Spacing of normal bf16 numbers in [2^e, 2^(e+1)) is 2^(e−7); stepping
// toward zero from an exact power of two the spacing below is half of that. Subnormal bf16 values
// (|x| < 2^−126) use the fixed spacing 2^−133; weights never live there.
using static TorchSharp.torch;

namespace Anneal.Training.Optim;

public static class StochasticRound
{
    const double SmallestSpacing = 9.183549615799121e-41;   // 2^-133, bf16's subnormal spacing

    /// <summary>Writes the stochastic bf16 rounding of fp32 <paramref name="x"/> into <paramref name="target"/> (same numel).</summary>
    public static void Into(Tensor x, Tensor target, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var r = x.to(ScalarType.BFloat16).to(ScalarType.Float32);        // nearest: one neighbour
        var error = x - r;                                                   // |error| ≤ half a spacing
        var magnitude = r.abs();
        var power = magnitude.log2().floor_().exp2_();                       // 2^floor(log2|r|); 0 for r = 0
        var spacing = (power * (1.0 / 128)).clamp_min_(SmallestSpacing);
        var direction = error.sign();
        var towardZero = (direction * r.sign()).lt(0);
        spacing = where(towardZero.logical_and(magnitude.eq(power)), spacing * 0.5, spacing);
        var probability = error.abs().div_(spacing);                         // of moving to the other neighbour
        var draw = rand(x.shape, generator: generator, dtype: ScalarType.Float32, device: x.device);
        var rounded = where(draw.lt(probability), r + direction * spacing, r);
        target.copy_(rounded);                                               // exact: both neighbours are bf16 values
    }
}
