// Lifetime of the gradients our custom autograd functions hand back to libtorch.
//
// TorchSharp's custom-function node copies each returned tensor into libtorch's own list as soon as
// backward returns, but the managed wrapper keeps its reference until the garbage collector runs;
// for a [vocab, hidden] weight gradient that is hundreds of MB of GPU memory. The wrappers are kept
// here and disposed at the start of the next backward of ours on the same thread (autograd calls a
// device's backward functions from one thread, one at a time), so at most one set lingers.
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

static class ReturnedGradients
{
    [ThreadStatic] static List<Tensor>? pending;

    /// <summary>Disposes what earlier backward calls on this thread returned (libtorch holds its own copies).</summary>
    public static void ReleasePrevious()
    {
        if (pending is null) return;
        foreach (var t in pending) t.Dispose();
        pending.Clear();
    }

    /// <summary>Keeps <paramref name="gradient"/> alive past the caller's dispose scope until the next backward.</summary>
    public static Tensor? Keep(Tensor? gradient)
    {
        if (gradient is null) return null;
        gradient.DetachFromDisposeScope();
        (pending ??= []).Add(gradient);
        return gradient;
    }
}
