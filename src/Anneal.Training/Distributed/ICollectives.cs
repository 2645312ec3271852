// The collective operations data-parallel training needs, on flat contiguous float32 or bfloat16
// tensors (the optimizer's flat buffers), with two implementations behind it:
//   MpiCollectives   Open MPI (Debian's libmpi.so.40) for CPU ranks, launched by mpirun: what CI runs;
//   NcclCollectives  NCCL (libnccl.so.2 of the installed PyTorch) for one rank per CUDA device.
// Every rank must call the same collectives in the same order with the same sizes: a rank that
// skips one leaves the others waiting (the Watchdog turns that into an abort, never a hang).
using static TorchSharp.torch;

namespace Anneal.Training.Distributed;

public interface ICollectives : IDisposable
{
    /// <summary>This process's rank, 0 ≤ Rank &lt; Size.</summary>
    int Rank { get; }
    /// <summary>Number of ranks.</summary>
    int Size { get; }
    /// <summary>"mpi" or "nccl": named in logs and errors.</summary>
    string Backend { get; }

    /// <summary>In place: every rank's <paramref name="buffer"/> becomes the element-wise sum over ranks.</summary>
    void AllReduceSum(Tensor buffer);

    /// <summary>
    /// In place on <paramref name="buffer"/> of Size × S elements: block r (elements [r·S, (r+1)·S))
    /// of rank r becomes the sum over ranks of block r; the other blocks are left undefined.
    /// </summary>
    void ReduceScatterSum(Tensor buffer);

    /// <summary>In place on <paramref name="buffer"/> of Size × S elements: block r of every rank becomes rank r's block r.</summary>
    void AllGather(Tensor buffer);

    /// <summary>In place: every rank's <paramref name="buffer"/> becomes rank <paramref name="root"/>'s.</summary>
    void Broadcast(Tensor buffer, int root = 0);

    /// <summary>Returns when every rank has called it.</summary>
    void Barrier();

    /// <summary>Ends every rank of the world now (communicator abort); used when a collective has timed out.</summary>
    void Abort(string reason);
}

/// <summary>Checks shared by the implementations.</summary>
static class CollectiveChecks
{
    public static void Flat(Tensor t, string what)
    {
        if (t.dim() != 1 || !t.is_contiguous())
            throw new ArgumentException($"{what}: expected a flat contiguous tensor, got shape [{string.Join(", ", t.shape)}]");
        if (t.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float64 or ScalarType.Int64))
            throw new ArgumentException($"{what}: dtype {t.dtype} is not supported (float32, bfloat16, float64, int64)");
    }

    public static long Block(Tensor t, int size, string what)
    {
        Flat(t, what);
        if (t.numel() % size != 0)
            throw new ArgumentException($"{what}: {t.numel()} elements do not split into {size} equal blocks (pad the buffer to a multiple of the world size)");
        return t.numel() / size;
    }
}
