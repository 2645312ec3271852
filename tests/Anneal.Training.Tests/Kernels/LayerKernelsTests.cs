// The decoder layer's custom autograd nodes (RMSNorm, rotary, SwiGLU) against the same math composed
// from tensor ops under plain autograd: forward and every input's gradient, in float64 to rounding
// error, in float32 closely and in bf16 within bf16 rounding; with only some inputs needing gradients
// (LoRA freezes the norm weights); and bad shapes rejected by name.
using Anneal.Training.Kernels;
using Anneal.Training.Native;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Kernels;

public class LayerKernelsTests
{
    public LayerKernelsTests() => NativeLibraries.EnsureTorchLoaded();

    /// <summary>Output and the gradients of Σ y·g (g random) with respect to each input that requires grad.</summary>
    static (Tensor Output, Tensor?[] Grads) Run(Func<Tensor[], Tensor> f, Tensor[] inputs, Generator generator)
    {
        var leaves = inputs.Select(t => t.detach().clone().requires_grad_(t.requires_grad)).ToArray();
        var y = f(leaves);
        var g = randn(y.shape, dtype: ScalarType.Float64, generator: generator).to(y.dtype);
        (y * g).sum().backward();
        return (y.detach(), leaves.Select(l => l.requires_grad ? l.grad : null).ToArray());
    }

    static void AssertClose(Func<Tensor[], Tensor> kernel, Func<Tensor[], Tensor> reference, Tensor[] inputs, double tolerance, string what)
    {
        var (y, grads) = Run(kernel, inputs, new Generator(7));
        var (yRef, gradsRef) = Run(reference, inputs, new Generator(7));
        Assert.True(y.dtype == yRef.dtype, $"{what}: dtype {y.dtype} vs {yRef.dtype}");
        var scale = Math.Max(1, yRef.abs().max().to(ScalarType.Float64).item<double>());
        Assert.True(TestTensors.MaxDiff(y, yRef) <= tolerance * scale, $"{what}: forward differs by {TestTensors.MaxDiff(y, yRef)}");
        for (var i = 0; i < inputs.Length; i++)
        {
            if (!inputs[i].requires_grad) { Assert.Null(grads[i]); continue; }
            Assert.NotNull(grads[i]);
            var gradScale = Math.Max(1, gradsRef[i]!.abs().max().to(ScalarType.Float64).item<double>());
            var diff = TestTensors.MaxDiff(grads[i]!, gradsRef[i]!);
            Assert.True(diff <= tolerance * gradScale, $"{what}: gradient of input {i} differs by {diff} (scale {gradScale})");
            Assert.True(grads[i]!.abs().sum().to(ScalarType.Float64).item<double>() > 0, $"{what}: input {i} has a gradient");
        }
    }

    static Tensor Rand(long[] shape, ScalarType dtype, Generator g, bool grad = true, double offset = 0) =>
        (randn(shape, dtype: ScalarType.Float64, generator: g) + offset).to(dtype).requires_grad_(grad);

    public static TheoryData<string, double> Precisions => new()
    {
        { "Float64", 1e-12 },
        { "Float32", 1e-5 },
        { "BFloat16", 2e-2 },
    };

    static ScalarType Parse(string dtype) => Enum.Parse<ScalarType>(dtype);

    [Theory]
    [MemberData(nameof(Precisions))]
    public void RmsNorm_matches_composed_ops(string dtype, double tolerance)
    {
        var g = new Generator(11);
        var x = Rand([2, 3, 4, 16], Parse(dtype), g);
        var w = Rand([16], Parse(dtype), g, offset: 1);
        AssertClose(t => RmsNormKernel.Apply(t[0], t[1], 1e-6), t => RmsNormKernel.Reference(t[0], t[1], 1e-6), [x, w], tolerance, "rmsnorm " + dtype);
    }

    [Theory]
    [InlineData(true, false)]   // LoRA: frozen norm weight, the residual stream needs gradient
    [InlineData(false, true)]
    public void RmsNorm_returns_only_the_gradients_asked_for(bool inputGrad, bool weightGrad)
    {
        var g = new Generator(12);
        var x = Rand([3, 5, 8], ScalarType.Float64, g, inputGrad);
        var w = Rand([8], ScalarType.Float64, g, weightGrad, offset: 1);
        AssertClose(t => RmsNormKernel.Apply(t[0], t[1], 1e-6), t => RmsNormKernel.Reference(t[0], t[1], 1e-6), [x, w], 1e-12, "rmsnorm subset");
    }

    [Theory]
    [MemberData(nameof(Precisions))]
    public void Rotary_matches_composed_ops(string dtype, double tolerance)
    {
        var g = new Generator(21);
        var x = Rand([2, 3, 5, 8], Parse(dtype), g);
        var angles = Rand([2, 5, 8], ScalarType.Float64, g, grad: false);
        var (cos, sin) = (angles.cos().to(Parse(dtype)), angles.sin().to(Parse(dtype)));
        AssertClose(t => RotaryKernel.Apply(t[0], t[1], t[2]), t => RotaryKernel.Reference(t[0], t[1], t[2]), [x, cos, sin], tolerance, "rotary " + dtype);
    }

    [Fact]
    public void Rotary_forward_is_bit_identical_to_rotate_half()
    {
        var g = new Generator(22);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var x = Rand([1, 4, 6, 16], dtype, g, grad: false);
            var angles = Rand([1, 6, 16], ScalarType.Float64, g, grad: false);
            var (cos, sin) = (angles.cos().to(dtype), angles.sin().to(dtype));
            Assert.True(TestTensors.Same(RotaryKernel.Apply(x, cos, sin), RotaryKernel.Reference(x, cos, sin)), dtype.ToString());
        }
    }

    [Theory]
    [MemberData(nameof(Precisions))]
    public void SwiGlu_matches_composed_ops(string dtype, double tolerance)
    {
        var g = new Generator(31);
        var gate = Rand([2, 7, 24], Parse(dtype), g);
        var up = Rand([2, 7, 24], Parse(dtype), g);
        AssertClose(t => SwiGluKernel.Apply(t[0], t[1]), t => SwiGluKernel.Reference(t[0], t[1]), [gate, up], tolerance, "swiglu " + dtype);
    }

    [Fact]
    public void SwiGlu_with_a_frozen_gate_returns_only_the_up_gradient()
    {
        var g = new Generator(32);
        var gate = Rand([4, 8], ScalarType.Float64, g, grad: false);
        var up = Rand([4, 8], ScalarType.Float64, g);
        AssertClose(t => SwiGluKernel.Apply(t[0], t[1]), t => SwiGluKernel.Reference(t[0], t[1]), [gate, up], 1e-12, "swiglu subset");
    }

    [Fact]
    public void Finite_differences_agree_with_the_hand_written_backwards()
    {
        // Independent of the composed reference: central differences of Σ y·g in float64.
        var g = new Generator(41);
        var x = Rand([2, 2, 3, 4], ScalarType.Float64, g);
        var w = Rand([4], ScalarType.Float64, g, offset: 1);
        var angles = Rand([2, 3, 4], ScalarType.Float64, g, grad: false);
        var (cos, sin) = (angles.cos(), angles.sin());
        var up = Rand([2, 2, 3, 4], ScalarType.Float64, g);
        var cases = new (string Name, Func<Tensor[], Tensor> F, Tensor[] Inputs)[]
        {
            ("rmsnorm", t => RmsNormKernel.Apply(t[0], t[1], 1e-6), [x, w]),
            ("rotary", t => RotaryKernel.Apply(t[0], t[1], t[2]), [x, cos, sin]),
            ("swiglu", t => SwiGluKernel.Apply(t[0], t[1]), [x, up]),
        };
        foreach (var (name, f, inputs) in cases)
        {
            var (_, grads) = Run(f, inputs, new Generator(5));
            var probe = randn(f(inputs.Select(i => i.detach()).ToArray()).shape, dtype: ScalarType.Float64, generator: new Generator(5));
            for (var i = 0; i < inputs.Length; i++)
            {
                if (!inputs[i].requires_grad) continue;
                var flat = inputs[i].detach().clone().view(-1);
                for (long k = 0; k < flat.shape[0]; k += 3)
                {
                    double At(double delta)
                    {
                        var shifted = inputs.Select(t => t.detach().clone()).ToArray();
                        shifted[i].view(-1)[k] = flat[k].item<double>() + delta;
                        using var _ = no_grad();
                        return (f(shifted) * probe).sum().item<double>();
                    }
                    const double h = 1e-6;
                    var numeric = (At(h) - At(-h)) / (2 * h);
                    var analytic = grads[i]!.view(-1)[k].item<double>();
                    Assert.True(Math.Abs(numeric - analytic) <= 1e-6 * Math.Max(1, Math.Abs(numeric)), $"{name}: d/d input {i}[{k}] numeric {numeric} vs {analytic}");
                }
            }
        }
    }

    [Fact]
    public void Without_autograd_no_node_is_recorded()
    {
        var g = new Generator(51);
        var x = Rand([2, 2, 3, 4], ScalarType.Float32, g);
        var w = Rand([4], ScalarType.Float32, g, offset: 1);
        using var _ = no_grad();
        Assert.False(RmsNormKernel.Apply(x, w, 1e-6).requires_grad);
        Assert.False(SwiGluKernel.Apply(x, x).requires_grad);
        Assert.False(RotaryKernel.Apply(x, x[.., 0], x[.., 1]).requires_grad);
    }

    [Fact]
    public void Bad_shapes_are_rejected_with_the_expected_shape()
    {
        var x = zeros(2, 3, 4, 8);
        Assert.Contains("RMSNorm weight must be [8]", Assert.Throws<ArgumentException>(() => RmsNormKernel.Apply(x, ones(6), 1e-6)).Message);
        Assert.Contains("same dtype", Assert.Throws<ArgumentException>(() => RmsNormKernel.Apply(x, ones(8, dtype: ScalarType.Float64), 1e-6)).Message);
        Assert.Contains("cos and sin must be [2, 4, 8]", Assert.Throws<ArgumentException>(() => RotaryKernel.Apply(x, zeros(2, 3, 8), zeros(2, 3, 8))).Message);
        Assert.Contains("even head_dim", Assert.Throws<ArgumentException>(() => RotaryKernel.Apply(zeros(1, 1, 2, 3), zeros(1, 2, 3), zeros(1, 2, 3))).Message);
        Assert.Contains("one shape and dtype", Assert.Throws<ArgumentException>(() => SwiGluKernel.Apply(zeros(2, 3), zeros(3, 2))).Message);
    }
}
