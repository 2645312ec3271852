// Collectives for CPU ranks through Open MPI (Debian's openmpi-bin/libopenmpi-dev: libmpi.so.40),
// called by P/Invoke. The ranks are started by mpirun, which also ends the others when one dies.
// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are the addresses of exported
// structs (ompi_mpi_comm_world, ...), read with dlsym; MPI_IN_PLACE is (void*)1 (mpi.h).
// Reductions of bfloat16 go through an fp32 copy (MPI has no bf16 sum); copies between ranks
// (all-gather, broadcast) move bytes whatever the dtype. MPI counts are int: one call moves at most
// 2³¹−1 elements, which CPU-sized models never reach (checked, with a clear error).
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Distributed;

public sealed partial class MpiCollectives : ICollectives
{
    const string Library = "libmpi.so.40";
    const int ThreadMultiple = 3;              // MPI_THREAD_MULTIPLE in Open MPI's mpi.h
    static readonly IntPtr InPlace = 1;        // MPI_IN_PLACE
    const int RtldNow = 2, RtldGlobal = 0x100;

    readonly IntPtr world, opSum, typeFloat, typeDouble, typeInt64, typeByte;
    bool disposed;

    public int Rank { get; }
    public int Size { get; }
    public string Backend => "mpi";

    MpiCollectives(IntPtr handle)
    {
        IntPtr Export(string name) => NativeLibrary.TryGetExport(handle, name, out var p) ? p
            : throw new InvalidOperationException($"{Library} has no symbol {name}: expected Open MPI 4 or newer (apt-get install openmpi-bin libopenmpi-dev)");
        (world, opSum) = (Export("ompi_mpi_comm_world"), Export("ompi_mpi_op_sum"));
        (typeFloat, typeDouble, typeInt64, typeByte) = (Export("ompi_mpi_float"), Export("ompi_mpi_double"), Export("ompi_mpi_int64_t"), Export("ompi_mpi_byte"));
        Check(MPI_Initialized(out var initialized), "MPI_Initialized");
        if (initialized == 0) Check(MPI_Init_thread(IntPtr.Zero, IntPtr.Zero, ThreadMultiple, out _), "MPI_Init_thread");
        Check(MPI_Comm_rank(world, out var rank), "MPI_Comm_rank");
        Check(MPI_Comm_size(world, out var size), "MPI_Comm_size");
        (Rank, Size) = (rank, size);
    }

    /// <summary>Joins the MPI world this process was started in (by mpirun); loads libmpi.so.40 globally first.</summary>
    public static MpiCollectives Join()
    {
        // RTLD_GLOBAL: Open MPI's plugins (mca_*.so) resolve symbols of libmpi and libopen-pal.
        var handle = dlopen(Library, RtldNow | RtldGlobal);
        if (handle == IntPtr.Zero)
            throw new InvalidOperationException($"CPU ranks need Open MPI: {Library} could not be loaded ({Marshal.PtrToStringUTF8(dlerror()) ?? "not found"}); install it with apt-get install openmpi-bin libopenmpi-dev");
        DistributedLibraries.Register("mpi", handle);
        return new MpiCollectives(handle);
    }

    public void AllReduceSum(Tensor buffer)
    {
        CollectiveChecks.Flat(buffer, "all-reduce");
        Reduced(buffer, b => Check(MPI_Allreduce(InPlace, TensorPointers.Of(b), Count(b.numel()), TypeOf(b), opSum, world), "MPI_Allreduce"));
    }

    public void ReduceScatterSum(Tensor buffer)
    {
        var block = CollectiveChecks.Block(buffer, Size, "reduce-scatter");
        Reduced(buffer, b =>
        {
            // Into a separate block, then back to this rank's place (MPI_IN_PLACE would leave it at the front).
            using var mine = empty(block, b.dtype);
            Check(MPI_Reduce_scatter_block(TensorPointers.Of(b), TensorPointers.Of(mine), Count(block), TypeOf(b), opSum, world), "MPI_Reduce_scatter_block");
            using var slot = b.narrow(0, Rank * block, block);
            slot.copy_(mine);
        });
    }

    public void AllGather(Tensor buffer)
    {
        var block = CollectiveChecks.Block(buffer, Size, "all-gather");
        Check(MPI_Allgather(InPlace, 0, typeByte, TensorPointers.Of(buffer), Count(block * buffer.ElementSize), typeByte, world), "MPI_Allgather");
    }

    public void Broadcast(Tensor buffer, int root = 0)
    {
        CollectiveChecks.Flat(buffer, "broadcast");
        Check(MPI_Bcast(TensorPointers.Of(buffer), Count(buffer.numel() * buffer.ElementSize), typeByte, root, world), "MPI_Bcast");
    }

    public void Barrier() => Check(MPI_Barrier(world), "MPI_Barrier");

    public void Abort(string reason) => MPI_Abort(world, 1);

    /// <summary>Runs a reduction on <paramref name="buffer"/>, through an fp32 copy for bfloat16.</summary>
    static void Reduced(Tensor buffer, Action<Tensor> reduce)
    {
        if (buffer.device_type != DeviceType.CPU)
            throw new ArgumentException($"Open MPI collectives take CPU tensors; got one on {buffer.device}");
        if (buffer.dtype != ScalarType.BFloat16)
        {
            reduce(buffer);
            return;
        }
        using var wide = buffer.to(ScalarType.Float32);
        reduce(wide);
        buffer.copy_(wide);
    }

    IntPtr TypeOf(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => typeFloat,
        ScalarType.Float64 => typeDouble,
        ScalarType.Int64 => typeInt64,
        _ => throw new ArgumentException($"no MPI reduction for dtype {t.dtype}"),
    };

    static int Count(long n) => n <= int.MaxValue ? (int)n
        : throw new ArgumentException($"{n} elements in one MPI call; Open MPI counts are 32-bit (at most {int.MaxValue})");

    static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with MPI error {code}");
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        MPI_Finalized(out var finalized);
        if (finalized == 0) MPI_Finalize();
    }

    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr dlopen(string file, int mode);
    [LibraryImport("libc", EntryPoint = "dlerror")]
    private static partial IntPtr dlerror();

    [LibraryImport("mpi")] private static partial int MPI_Initialized(out int flag);
    [LibraryImport("mpi")] private static partial int MPI_Finalized(out int flag);
    [LibraryImport("mpi")] private static partial int MPI_Init_thread(IntPtr argc, IntPtr argv, int required, out int provided);
    [LibraryImport("mpi")] private static partial int MPI_Finalize();
    [LibraryImport("mpi")] private static partial int MPI_Comm_rank(IntPtr comm, out int rank);
    [LibraryImport("mpi")] private static partial int MPI_Comm_size(IntPtr comm, out int size);
    [LibraryImport("mpi")] private static partial int MPI_Allreduce(IntPtr send, IntPtr recv, int count, IntPtr type, IntPtr op, IntPtr comm);
    [LibraryImport("mpi")] private static partial int MPI_Reduce_scatter_block(IntPtr send, IntPtr recv, int count, IntPtr type, IntPtr op, IntPtr comm);
    [LibraryImport("mpi")] private static partial int MPI_Allgather(IntPtr send, int sendCount, IntPtr sendType, IntPtr recv, int recvCount, IntPtr recvType, IntPtr comm);
    [LibraryImport("mpi")] private static partial int MPI_Bcast(IntPtr buffer, int count, IntPtr type, int root, IntPtr comm);
    [LibraryImport("mpi")] private static partial int MPI_Barrier(IntPtr comm);
    [LibraryImport("mpi")] private static partial int MPI_Abort(IntPtr comm, int code);
}
