// A QLoRA linear computes what a LoRA linear computes when the LoRA base weight is the dequantised
// NF4 weight: same output, same gradients for the input and both adapters, in fp32 and bf16.
using Anneal.Core.Training;
using Anneal.Training.Model;
using Anneal.Training.Native;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Model;

[Collection(TorchRandomCollection.Name)]
public sealed class QloraLinearTests
{
    readonly ITestOutputHelper output;

    public QloraLinearTests(ITestOutputHelper output)
    {
        this.output = output;
        NativeLibraries.EnsureTorchLoaded();
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1e-5)]
    [InlineData(ScalarType.BFloat16, 2e-2)]
    public void Forward_and_gradients_equal_lora_over_the_dequantised_base(ScalarType dtype, double tolerance)
    {
        manual_seed(17);
        var settings = new LoraSettings(R: 4, Alpha: 8);
        using var qlora = new QloraLinear(128, 96, false, settings, CPU, dtype);
        using var lora = new LoraLinear(128, 96, false, settings, CPU, dtype);
        using (no_grad())
        {
            using var w = randn(96, 128) * 0.05;
            qlora.LoadBase(w.to(dtype));
            using var deq = qlora.BaseWeight.Dequantize(dtype);
            lora.BaseWeight.copy_(deq);
            // B starts at zero; give it values so the adapter path shows in every gradient.
            using var a = randn(4, 128) * 0.1;
            using var b = randn(96, 4) * 0.1;
            foreach (var layer in new (Tensor A, Tensor B)[] { (qlora.A, qlora.B), (lora.A, lora.B) })
            {
                layer.A.copy_(a);
                layer.B.copy_(b);
            }
        }

        using var x0 = randn(2, 5, 128).to(dtype);
        using var dy = randn(2, 5, 96).to(dtype);
        (Tensor Y, Tensor Dx, Tensor DA, Tensor DB) Run(nn.Module<Tensor, Tensor> layer, Tensor A, Tensor B)
        {
            var x = x0.detach().requires_grad_(true);
            var y = layer.call(x);
            y.backward([dy]);
            var result = (y.detach(), x.grad!.detach().clone(), A.grad!.detach().clone(), B.grad!.detach().clone());
            A.grad!.zero_(); B.grad!.zero_();
            return result;
        }
        var q = Run(qlora, qlora.A, qlora.B);
        var l = Run(lora, lora.A, lora.B);
        double Relative(Tensor u, Tensor v) => TestTensors.MaxDiff(u, v) / v.abs().max().to(float64).item<double>();
        output.WriteLine($"{dtype}: y {Relative(q.Y, l.Y):E2}, dx {Relative(q.Dx, l.Dx):E2}, dA {Relative(q.DA, l.DA):E2}, dB {Relative(q.DB, l.DB):E2}");
        Assert.True(Relative(q.Y, l.Y) < tolerance);
        Assert.True(Relative(q.Dx, l.Dx) < tolerance);
        Assert.True(Relative(q.DA, l.DA) < tolerance);
        Assert.True(Relative(q.DB, l.DB) < tolerance);
    }

    [Fact]
    public void Adapters_get_gradients_when_the_input_needs_none()
    {
        manual_seed(3);
        using var layer = new QloraLinear(64, 64, false, new LoraSettings(R: 2), CPU, ScalarType.Float32);
        using (no_grad()) layer.LoadBase(randn(64, 64));
        using var x = randn(3, 64);
        using var y = layer.call(x);
        using var loss = y.sum();
        loss.backward();
        Assert.NotNull(layer.A.grad);
        Assert.NotNull(layer.B.grad);
        Assert.True(layer.B.grad!.abs().max().item<float>() > 0);
        Assert.Equal(["lora_A.weight", "lora_B.weight"], layer.named_parameters().Select(p => p.name));
    }

    [Fact]
    public void Untargeted_layer_is_a_frozen_nf4_linear_without_parameters()
    {
        using var layer = new QloraLinear(64, 32, false, null, CPU, ScalarType.Float32);
        Assert.Empty(layer.parameters());
        Assert.False(layer.HasAdapters);
        using var w = randn(32, 64);
        layer.LoadBase(w);
        using var x = randn(4, 64);
        using var y = layer.call(x);
        using var expected = nn.functional.linear(x, layer.BaseWeight.Dequantize(ScalarType.Float32));
        Assert.True(TestTensors.MaxDiff(y, expected) < 1e-6);
        var e = Assert.Throws<ArgumentException>(() => layer.LoadBase(randn(64, 32)));
        Assert.Contains("[64, 32]", e.Message);
        Assert.Contains("[32, 64]", e.Message);
    }
}
