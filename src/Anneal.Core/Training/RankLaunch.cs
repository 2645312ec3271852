// The launch contract of a multi-rank job on one host (one trainer process per rank), shared by the
// runner that starts the ranks and the trainer that joins them:
//   CPU ranks: mpirun -np N … anneal trainer run --spec spec.json; rank, size and local rank come from
//     Open MPI (OMPI_COMM_WORLD_*), and the collectives are Open MPI's;
//   GPU ranks: the same launch, one rank per CUDA device (device = local rank), NCCL collectives,
//     NCCL's unique id handed from rank 0 to the others through the job folder (ANNEAL_RUN_ID names it).
// A process started without these variables is a world of one and trains as before.
namespace Anneal.Core.Training;

public static class RankLaunch
{
    /// <summary>torchrun-style variables for a launcher other than mpirun (they win over Open MPI's).</summary>
    public const string RankVariable = "ANNEAL_RANK", LocalRankVariable = "ANNEAL_LOCAL_RANK", WorldSizeVariable = "ANNEAL_WORLD_SIZE";
    /// <summary>What Open MPI's mpirun sets in each rank.</summary>
    public const string MpiRankVariable = "OMPI_COMM_WORLD_RANK", MpiLocalRankVariable = "OMPI_COMM_WORLD_LOCAL_RANK", MpiSizeVariable = "OMPI_COMM_WORLD_SIZE";
    /// <summary>"mpi" or "nccl"; unset: NCCL on CUDA, Open MPI on CPU.</summary>
    public const string CollectivesVariable = "ANNEAL_COLLECTIVES";
    /// <summary>A unique id of this launch (rendezvous files of an earlier attempt are never read).</summary>
    public const string RunIdVariable = "ANNEAL_RUN_ID";
    /// <summary>The control plane's rendezvous of this launch (…/internal/jobs/{id}/rendezvous) and its token; unset: the job folder.</summary>
    public const string RendezvousUrlVariable = "ANNEAL_RENDEZVOUS_URL", RendezvousTokenVariable = "ANNEAL_RENDEZVOUS_TOKEN";
    /// <summary>Seconds one collective may wait before every rank is aborted (default 1800).</summary>
    public const string TimeoutVariable = "ANNEAL_COLLECTIVE_TIMEOUT_S";
    /// <summary>"off": full fine-tuning keeps the whole optimizer state on every rank instead of sharding it (ZeRO-1).</summary>
    public const string Zero1Variable = "ANNEAL_ZERO1";

    /// <summary>
    /// mpirun and its options for <paramref name="ranks"/> ranks on this host, before the trainer's
    /// command: more ranks than cores allowed (CPU ranks in CI), no core binding (libtorch has its
    /// own threads), shared-memory transport without the cross-memory-attach copy that containers
    /// forbid, ranks that yield the core while they wait in a collective (Open MPI busy-polls by
    /// default, which halved the speed of CPU ranks sharing two cores with each other), and
    /// --allow-run-as-root where the service runs as root (CI does). mpirun hands each rank's stdout
    /// over a pseudo-terminal, and .NET writes the terminal's keypad-mode escape to it when the console
    /// starts, which landed in front of the first event line: TERM=dumb has no such escape.
    /// </summary>
    public static IReadOnlyList<string> MpirunPrefix(int ranks, bool runningAsRoot)
    {
        var args = new List<string> { "mpirun", "-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "--oversubscribe", "--bind-to", "none",
            "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none", "--mca", "mpi_yield_when_idle", "1", "-x", "TERM=dumb" };
        if (runningAsRoot) args.Add("--allow-run-as-root");
        return args;
    }

    /// <summary>(rank, world size, local rank) from the environment; (0, 1, 0) when the process was not launched as a rank.</summary>
    public static (int Rank, int Size, int LocalRank) FromEnvironment(Func<string, string?>? getenv = null)
    {
        getenv ??= Environment.GetEnvironmentVariable;
        int? Int(string name) => int.TryParse(getenv(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : null;
        var size = Int(WorldSizeVariable) ?? Int(MpiSizeVariable) ?? 1;
        var rank = Int(RankVariable) ?? Int(MpiRankVariable) ?? 0;
        var local = Int(LocalRankVariable) ?? Int(MpiLocalRankVariable) ?? rank;
        if (size < 1 || rank >= size)
            throw new InvalidOperationException($"rank {rank} of world size {size} ({RankVariable}/{WorldSizeVariable} or Open MPI's): expected 0 ≤ rank < size");
        return (rank, size, local);
    }
}
