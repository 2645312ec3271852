// Small tensor comparisons for assertions.
using TorchSharp;

namespace Anneal.Training.Tests;

static class TestTensors
{
    /// <summary>Same shape and bit-for-bit equal values.</summary>
    public static bool Same(torch.Tensor a, torch.Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();

    /// <summary>Largest absolute difference, computed in float64.</summary>
    public static double MaxDiff(torch.Tensor a, torch.Tensor b) =>
        (a.to(torch.float64) - b.to(torch.float64)).abs().max().item<double>();
}
