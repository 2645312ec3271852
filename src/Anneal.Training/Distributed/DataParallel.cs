// Data-parallel training as the trainer sees it: which rank this process is, the communicator, and
// the few things the loop does differently with more than one rank (see Trainer.Train):
//   - each optimizer step's plan is made for the GLOBAL batch (gradient_accumulation_steps × ranks
//     micro-batches, per_device_batch rows each) and rank r takes micro-batches r, r + N, r + 2N, …:
//     so N ranks train exactly the examples one process trains with N× the accumulation;
//   - the step's trained tokens are summed over ranks before the loss is divided by them, so every
//     token weighs the same whichever rank it is on; the reported loss is the sum over ranks;
//   - FlatAdamW sums the gradients (all-reduce, or reduce-scatter for ZeRO-1) before clipping;
//   - stop requests (cancel, pause) are agreed by all ranks at each step boundary, so no rank
//     enters a collective the others have left;
//   - rank 0 alone emits events and writes checkpoints and the final model.
// Every rank runs the same number of optimizer steps and the same collectives per step; in a
// step whose micro-batches do not divide by N (the last of an epoch) some ranks train one
// micro-batch fewer, or none, and still take part in the step's collectives.
using Anneal.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Distributed;

public sealed class DataParallel : IDisposable
{
    public static DataParallel Single { get; } = new(null, 0, 1, 0, zero1: false);

    /// <summary>The communicator (null in a world of one).</summary>
    public ICollectives? Comm { get; }
    public int Rank { get; }
    public int Size { get; }
    public int LocalRank { get; }
    public bool IsRoot => Rank == 0;
    /// <summary>Full fine-tuning over several ranks shards the optimizer state (unless ANNEAL_ZERO1=off).</summary>
    public bool Zero1 { get; }

    DataParallel(ICollectives? comm, int rank, int size, int localRank, bool zero1) =>
        (Comm, Rank, Size, LocalRank, Zero1) = (comm, rank, size, localRank, zero1);

    /// <summary>
    /// Joins the world this process was launched into (RankLaunch); a world of one without the
    /// variables. Collectives: NCCL on CUDA, Open MPI on CPU, or ANNEAL_COLLECTIVES (which also puts
    /// a single rank through them).
    /// </summary>
    public static DataParallel Join(TrainerJobSpec spec, Device device, Action<string> log)
    {
        var (rank, size, localRank) = RankLaunch.FromEnvironment();
        var forced = Environment.GetEnvironmentVariable(RankLaunch.CollectivesVariable) is { Length: > 0 } b ? b : null;
        // One rank takes the collective path only when asked (ANNEAL_COLLECTIVES): the check that
        // NCCL on one GPU trains like the plain run.
        if (size == 1 && forced is null) return Single;
        var backend = forced ?? (device.type == DeviceType.CUDA ? "nccl" : "mpi");
        var timeout = int.TryParse(Environment.GetEnvironmentVariable(RankLaunch.TimeoutVariable), out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds) : Watchdog.DefaultTimeout;
        DistributedLibraries.Install();
        ICollectives comm = backend switch
        {
            "mpi" => MpiCollectives.Join(),
            "nccl" => NcclCollectives.Join(rank, size, localRank, Rendezvous.ForLaunch(spec.OutputDir, spec.JobId, timeout)),
            _ => throw TrainerUserException.Config($"{RankLaunch.CollectivesVariable} \"{backend}\" is not known; use \"mpi\" or \"nccl\""),
        };
        if (comm.Rank != rank || comm.Size != size)
        {
            comm.Dispose();
            throw new InvalidOperationException($"the launch says rank {rank} of {size}, {backend} says rank {comm.Rank} of {comm.Size}");
        }
        var zero1 = spec.Settings.Mode == TrainingModes.FullFinetune
                    && !string.Equals(Environment.GetEnvironmentVariable(RankLaunch.Zero1Variable), "off", StringComparison.OrdinalIgnoreCase);
        log($"rank {rank} of {size} (local rank {localRank}, pid {Environment.ProcessId}): {backend} collectives, " +
            $"{(zero1 ? "optimizer state sharded (ZeRO-1)" : "optimizer state replicated")}, collective timeout {timeout.TotalSeconds:F0} s");
        return new DataParallel(new Watchdog(comm, timeout, log), rank, size, localRank, zero1);
    }

    /// <summary>This rank's device: cuda:local_rank for GPU ranks, the given device otherwise.</summary>
    public Device Place(Device device) =>
        Size > 1 && device.type == DeviceType.CUDA ? torch.device(DeviceType.CUDA, LocalRank) : device;

    /// <summary>Refuses a multi-rank launch of a trainer that has no data-parallel path.</summary>
    public static void RequireSingleRank(string what)
    {
        var (_, size, _) = RankLaunch.FromEnvironment();
        if (size > 1)
            throw TrainerUserException.Config($"{what} trains on one device only; this job was launched as {size} ranks (set [compute] gpu_count = 1)");
    }

    /// <summary>This rank's micro-batches of one optimizer step of the global plan: r, r + N, r + 2N, …</summary>
    public List<T> Shard<T>(IReadOnlyList<T> stepMicroBatches) =>
        Size == 1 ? [.. stepMicroBatches] : stepMicroBatches.Where((_, i) => i % Size == Rank).ToList();

    /// <summary>Returns when every rank has reached it (no-op in a world of one).</summary>
    public void Barrier() => Comm?.Barrier();

    /// <summary>Σ over ranks of a count.</summary>
    public long Sum(long value, Device device)
    {
        if (Comm is null) return value;
        using var t = tensor(new[] { value }, device: Comm.Backend == "nccl" ? device : CPU);
        Comm.AllReduceSum(t);
        return t.cpu()[0].item<long>();
    }

    /// <summary>Σ over ranks of a float64 value (on CPU for MPI, on the rank's device for NCCL).</summary>
    public double Sum(double value, Device device)
    {
        if (Comm is null) return value;
        using var t = tensor(new[] { value }, device: Comm.Backend == "nccl" ? device : CPU);
        Comm.AllReduceSum(t);
        return t.cpu()[0].item<double>();
    }

    /// <summary>Whether any rank has each flag set: stop requests become one decision for every rank.</summary>
    public (bool, bool) Any(bool first, bool second, Device device)
    {
        if (Comm is null) return (first, second);
        using var t = tensor(new[] { first ? 1.0 : 0.0, second ? 1.0 : 0.0 }, device: Comm.Backend == "nccl" ? device : CPU);
        Comm.AllReduceSum(t);
        var v = t.cpu().data<double>().ToArray();
        return (v[0] > 0, v[1] > 0);
    }

    bool finished;

    /// <summary>Marks a run that ended normally on this rank and passes its result through.</summary>
    public T Finished<T>(T result)
    {
        finished = true;
        return result;
    }

    /// <summary>
    /// After a normal end, leaves the world (MPI_Finalize, ncclCommDestroy). After a failure it does
    /// not: finalizing waits for ranks that may be blocked in a collective, while a rank that exits
    /// without it makes mpirun end all the others at once (after this rank has reported its error).
    /// </summary>
    public void Dispose()
    {
        if (this == Single || !finished) return;
        Comm?.Dispose();
    }
}
