// Collectives for one rank per CUDA device through NCCL, called by P/Invoke as verified from
// TorchSharp on an H100 with one rank (SCALEOUT-QLORA.md §A1): device pointers from THSTensor_data,
// libtorch's work on the legacy default stream (0), ncclCommInitRank after cudaSetDevice(local rank).
// libnccl.so.2 and libcudart come from the installed PyTorch's NVIDIA wheels, next to the libtorch
// the trainer loaded (site-packages/nvidia/...), or from ANNEAL_NCCL_LIBRARY / ANNEAL_CUDART_LIBRARY.
// Each call synchronises the stream before returning, so a collective that never completes is seen
// by the Watchdog (which then calls ncclCommAbort) rather than by a later .item(). Overlap later.
// Multi-rank NCCL has NOT been run: the machines at hand have one GPU, and NCCL refuses two ranks
// on one device. The unique id reaches the other ranks through an IRendezvous (rank 0 creates it).
using System.Runtime.InteropServices;
using Anneal.Training.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Distributed;

[StructLayout(LayoutKind.Sequential)]
struct NcclUniqueId
{
    [MarshalAs(UnmanagedType.ByValArray, SizeConst = 128)] public byte[] Internal;
}

public sealed class NcclCollectives : ICollectives
{
    // ncclDataType_t and ncclRedOp_t (nccl.h): float 7, double 8, bfloat16 9, int64 4; sum 0.
    const int NcclInt64 = 4, NcclFloat = 7, NcclDouble = 8, NcclBf16 = 9, NcclSum = 0;
    readonly IntPtr comm;
    readonly Device device;
    int aborted;

    public int Rank { get; }
    public int Size { get; }
    public string Backend => "nccl";

    NcclCollectives(IntPtr comm, int rank, int size, Device device) => (this.comm, Rank, Size, this.device) = (comm, rank, size, device);

    /// <summary>Creates the communicator of rank <paramref name="rank"/> on CUDA device <paramref name="localRank"/>.</summary>
    public static NcclCollectives Join(int rank, int size, int localRank, IRendezvous rendezvous)
    {
        LoadLibraries();
        CheckCuda(cudaSetDevice(localRank), $"cudaSetDevice({localRank})");
        var id = new NcclUniqueId { Internal = new byte[128] };
        if (rank == 0)
        {
            Check(ncclGetUniqueId(ref id), "ncclGetUniqueId");
            rendezvous.Publish(id.Internal);
        }
        else
            id.Internal = rendezvous.Await(128);
        Check(ncclCommInitRank(out var comm, size, id, rank), $"ncclCommInitRank(rank {rank} of {size})");
        return new NcclCollectives(comm, rank, size, torch.device(DeviceType.CUDA, localRank));
    }

    public void AllReduceSum(Tensor buffer)
    {
        CollectiveChecks.Flat(buffer, "all-reduce");
        var p = TensorPointers.Of(buffer);
        Run(ncclAllReduce(p, p, (nuint)buffer.numel(), TypeOf(buffer), NcclSum, comm, IntPtr.Zero), "ncclAllReduce");
    }

    public void ReduceScatterSum(Tensor buffer)
    {
        var block = CollectiveChecks.Block(buffer, Size, "reduce-scatter");
        var p = TensorPointers.Of(buffer);
        // In place as nccl.h defines it: recvbuff = sendbuff + rank · recvcount.
        Run(ncclReduceScatter(p, p + (nint)(Rank * block * buffer.ElementSize), (nuint)block, TypeOf(buffer), NcclSum, comm, IntPtr.Zero), "ncclReduceScatter");
    }

    public void AllGather(Tensor buffer)
    {
        var block = CollectiveChecks.Block(buffer, Size, "all-gather");
        var p = TensorPointers.Of(buffer);
        // In place: sendbuff = recvbuff + rank · sendcount.
        Run(ncclAllGather(p + (nint)(Rank * block * buffer.ElementSize), p, (nuint)block, TypeOf(buffer), comm, IntPtr.Zero), "ncclAllGather");
    }

    public void Broadcast(Tensor buffer, int root = 0)
    {
        CollectiveChecks.Flat(buffer, "broadcast");
        var p = TensorPointers.Of(buffer);
        Run(ncclBroadcast(p, p, (nuint)buffer.numel(), TypeOf(buffer), root, comm, IntPtr.Zero), "ncclBroadcast");
    }

    public void Barrier()
    {
        using var one = ones(1, ScalarType.Float32, device);
        AllReduceSum(one);
    }

    public void Abort(string reason)
    {
        if (Interlocked.Exchange(ref aborted, 1) == 0) ncclCommAbort(comm);
    }

    void Run(int code, string call)
    {
        Check(code, call);
        torch.cuda.synchronize(device);
    }

    static int TypeOf(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => NcclFloat,
        ScalarType.BFloat16 => NcclBf16,
        ScalarType.Float64 => NcclDouble,
        ScalarType.Int64 => NcclInt64,
        _ => throw new ArgumentException($"no NCCL type for dtype {t.dtype}"),
    };

    static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed: NCCL error {code} ({Marshal.PtrToStringUTF8(ncclGetErrorString(code))})");
    }

    static void CheckCuda(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with CUDA error {code}");
    }

    /// <summary>Finds libnccl.so.2 and libcudart beside the installed PyTorch (site-packages/nvidia/*/lib), or by the environment.</summary>
    static void LoadLibraries()
    {
        var nvidia = NativeLibraries.LibtorchDirectory is { } lib ? Path.GetFullPath(Path.Combine(lib, "..", "..", "nvidia")) : null;
        IntPtr Find(string variable, string pattern, string what)
        {
            var candidates = new List<string>();
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } forced) candidates.Add(forced);
            if (nvidia is not null && Directory.Exists(nvidia))
                candidates.AddRange(Directory.EnumerateFiles(nvidia, pattern, SearchOption.AllDirectories).Order(StringComparer.Ordinal));
            candidates.Add(pattern.Replace("*", "2", StringComparison.Ordinal));
            foreach (var c in candidates)
                if (NativeLibrary.TryLoad(c, out var handle)) return handle;
            throw new InvalidOperationException($"GPU ranks need {what}: none of [{string.Join(", ", candidates)}] could be loaded; set {variable} to its path");
        }
        DistributedLibraries.Register("nccl", Find("ANNEAL_NCCL_LIBRARY", "libnccl.so.*", "NCCL (libnccl.so.2, from the nvidia-nccl wheel PyTorch installs)"));
        DistributedLibraries.Register("cudart", Find("ANNEAL_CUDART_LIBRARY", "libcudart.so.*", "the CUDA runtime (libcudart.so)"));
    }

    public void Dispose()
    {
        if (aborted == 0) ncclCommDestroy(comm);
    }

    [DllImport("cudart")] static extern int cudaSetDevice(int device);
    [DllImport("nccl")] static extern int ncclGetUniqueId(ref NcclUniqueId id);
    [DllImport("nccl")] static extern int ncclCommInitRank(out IntPtr comm, int nranks, NcclUniqueId id, int rank);
    [DllImport("nccl")] static extern int ncclAllReduce(IntPtr send, IntPtr recv, nuint count, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport("nccl")] static extern int ncclReduceScatter(IntPtr send, IntPtr recv, nuint recvCount, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport("nccl")] static extern int ncclAllGather(IntPtr send, IntPtr recv, nuint sendCount, int type, IntPtr comm, IntPtr stream);
    [DllImport("nccl")] static extern int ncclBroadcast(IntPtr send, IntPtr recv, nuint count, int type, int root, IntPtr comm, IntPtr stream);
    [DllImport("nccl")] static extern int ncclCommAbort(IntPtr comm);
    [DllImport("nccl")] static extern int ncclCommDestroy(IntPtr comm);
    [DllImport("nccl")] static extern IntPtr ncclGetErrorString(int result);
}
