// ChunkedCrossEntropy against the full-logits loss: value and gradients for hidden and weight.
using Anneal.Training.Kernels;
using Anneal.Training.Native;
using Anneal.Training.Tests.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Kernels;

[Collection(TorchCollection.Name)]
public class ChunkedCrossEntropyTests
{
    public ChunkedCrossEntropyTests() => NativeLibraries.EnsureTorchLoaded();

    // N = 37 rows (not a multiple of the chunk), H = 16, V = 50; every fourth target ignored.
    static (Tensor Hidden, Tensor Weight, Tensor Targets) Inputs(ScalarType dtype, long seed)
    {
        var generator = new Generator((ulong)seed);
        var hidden = randn([37, 16], generator: generator).to(dtype).requires_grad_();
        var weight = (randn([50, 16], generator: generator) * 0.5).to(dtype).requires_grad_();
        var targets = randint(0, 50, [37], generator: generator);
        for (int i = 0; i < 37; i += 4) targets[i] = tensor(ChunkedCrossEntropy.IgnoreIndex);
        return (hidden, weight, targets);
    }

    static float MaxDiff(Tensor a, Tensor b) => (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max().item<float>();

    [Theory]
    [InlineData(1L)]
    [InlineData(8L)]
    [InlineData(37L)]
    [InlineData(1000L)]
    public void Loss_and_gradients_match_the_full_logits_loss_in_fp32(long chunkRows)
    {
        var (h1, w1, targets) = Inputs(ScalarType.Float32, 1);
        var h2 = h1.detach().clone().requires_grad_();
        var w2 = w1.detach().clone().requires_grad_();

        var plain = ChunkedCrossEntropy.PlainSum(h1, w1, targets);
        var chunked = ChunkedCrossEntropy.Sum(h2, w2, targets, chunkRows);
        Assert.Equal(plain.item<float>(), chunked.item<float>(), 3);
        Assert.True(MaxDiff(plain, chunked) < 1e-4);

        // A non-unit upstream gradient, as when the sum is divided by the trained-token count.
        (plain / 29.0).backward();
        (chunked / 29.0).backward();
        Assert.True(MaxDiff(h1.grad!, h2.grad!) < 1e-5, $"hidden grad max diff {MaxDiff(h1.grad!, h2.grad!)}");
        Assert.True(MaxDiff(w1.grad!, w2.grad!) < 1e-5, $"weight grad max diff {MaxDiff(w1.grad!, w2.grad!)}");
        // Ignored rows get no gradient.
        Assert.Equal(0f, h2.grad![0].abs().sum().item<float>());
    }

    [Fact]
    public void Bf16_inputs_match_the_plain_loss_with_fp32_logits()
    {
        var (h1, w1, targets) = Inputs(ScalarType.BFloat16, 2);
        var h2 = h1.detach().clone().requires_grad_();
        var w2 = w1.detach().clone().requires_grad_();
        var plain = ChunkedCrossEntropy.PlainSum(h1, w1, targets);
        var chunked = ChunkedCrossEntropy.Sum(h2, w2, targets, chunkRows: 8);
        Assert.Equal(ScalarType.Float32, chunked.dtype);
        Assert.True(MaxDiff(plain, chunked) < 1e-3 * Math.Abs(plain.item<float>()));
        plain.backward();
        chunked.backward();
        Assert.Equal(ScalarType.BFloat16, w2.grad!.dtype);
        // bf16 gradients: compare relative to their scale.
        Assert.True(MaxDiff(h1.grad!, h2.grad!) <= 0.02 * h1.grad!.abs().max().to(ScalarType.Float32).item<float>());
        Assert.True(MaxDiff(w1.grad!, w2.grad!) <= 0.02 * w1.grad!.abs().max().to(ScalarType.Float32).item<float>());
    }

    [Fact]
    public void Frozen_weight_gets_no_gradient_and_hidden_still_does()
    {
        var (h1, w1, targets) = Inputs(ScalarType.Float32, 3);
        var h2 = h1.detach().clone().requires_grad_();
        var frozen = w1.detach().clone();
        ChunkedCrossEntropy.PlainSum(h1, w1, targets).backward();
        ChunkedCrossEntropy.Sum(h2, frozen, targets, chunkRows: 5).backward();
        Assert.Null(frozen.grad);
        Assert.True(MaxDiff(h1.grad!, h2.grad!) < 1e-5);
    }

    [Fact]
    public void All_targets_ignored_gives_zero_loss_and_zero_gradients()
    {
        var (h, w, _) = Inputs(ScalarType.Float32, 4);
        var targets = full([37], ChunkedCrossEntropy.IgnoreIndex, ScalarType.Int64);
        var loss = ChunkedCrossEntropy.Sum(h, w, targets, chunkRows: 10);
        Assert.Equal(0f, loss.item<float>());
        loss.backward();
        Assert.Equal(0f, h.grad!.abs().sum().item<float>());
        Assert.Equal(0f, w.grad!.abs().sum().item<float>());
    }

    [Fact]
    public void Mismatched_shapes_are_rejected_with_the_shapes()
    {
        var (h, w, targets) = Inputs(ScalarType.Float32, 5);
        var badWeight = Assert.Throws<ArgumentException>(() => ChunkedCrossEntropy.Sum(h, w.t(), targets));
        Assert.Contains("[16, 50]", badWeight.Message);
        var badTargets = Assert.Throws<ArgumentException>(() => ChunkedCrossEntropy.Sum(h, w, targets.narrow(0, 0, 5)));
        Assert.Contains("[37]", badTargets.Message);
        var intTargets = Assert.Throws<ArgumentException>(() => ChunkedCrossEntropy.Sum(h, w, targets.to(ScalarType.Int32)));
        Assert.Contains("int64", intTargets.Message);
    }
}
