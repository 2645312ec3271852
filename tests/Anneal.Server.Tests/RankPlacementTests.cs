// [compute].gpu_count → ranks: the table of RankPlacement.cs.
using Anneal.Server;
using Anneal.Server.Runner;

namespace Anneal.Server.Tests;

public sealed class RankPlacementTests
{
    [Theory]
    //          requested, gpus,      cpuRanks, mpirun, ranks, onGpus, refusal contains
    [InlineData(1, "",        false, true,  1, false, null)]
    [InlineData(4, "",        false, true,  1, false, null)]               // CPU-only server: one process (and a warning)
    [InlineData(4, "",        true,  true,  4, false, null)]               // --cpu-ranks
    [InlineData(4, "",        true,  false, 4, false, "mpirun is not installed")]
    [InlineData(2, "0,1,2,3", false, true,  2, true,  null)]
    [InlineData(4, "0,1,2,3", false, true,  4, true,  null)]
    [InlineData(8, "0,1",     false, true,  0, true,  "[compute] asks for 8 GPUs; this server trains on 2 (--gpus 0,1)")]
    [InlineData(1, "5",       false, false, 1, true,  null)]               // one rank needs no mpirun
    public void Gpu_count_decides_the_ranks(int requested, string gpus, bool cpuRanks, bool mpirun, int ranks, bool onGpus, string? refusal)
    {
        var options = new ServerOptions { Gpus = gpus.Split(',', StringSplitOptions.RemoveEmptyEntries), CpuRanks = cpuRanks };
        var p = RankPlacement.Decide(requested, options, mpirun);
        Assert.Equal((ranks, onGpus), (p.Ranks, p.OnGpus));
        if (refusal is null) Assert.Null(p.Refusal);
        else Assert.Contains(refusal, p.Refusal);
    }

    [Theory]
    [InlineData(1, "0,1,2,3", 1)]
    [InlineData(4, "0,1,2,3", 4)]
    [InlineData(5, "0,1,2,3", 0)]   // refused: takes none
    [InlineData(4, "", 0)]
    public void A_job_takes_one_gpu_per_rank(int requested, string gpus, int taken) =>
        Assert.Equal(taken, RankPlacement.GpusToTake(requested, new ServerOptions { Gpus = gpus.Split(',', StringSplitOptions.RemoveEmptyEntries) }));

    // mpirun's words (Open MPI 4.1.4) when a rank dies without reporting sft.failed.
    [Fact]
    public void Mpiruns_notice_names_the_dead_rank()
    {
        const string rule = "--------------------------------------------------------------------------";
        Assert.Equal("rank 1 was killed by signal 9 (Killed), often the out-of-memory killer", MpirunExit.DeadRank(
        [
            "rank 1: step 3", rule, "Primary job  terminated normally, but 1 process returned",
            "a non-zero exit code. Per user-direction, the job has been aborted.", rule, rule,
            "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).", rule,
        ]));
        Assert.Equal("rank 2 exited with code 3 without reporting an error", MpirunExit.DeadRank(
        [
            rule, "mpirun detected that one or more processes exited with non-zero status, thus causing",
            "the job to be terminated. The first process to do so was:", "", "  Process name: [[1509,1],2]", "  Exit code:    3", rule,
        ]));
        Assert.Null(MpirunExit.DeadRank(["rank 1: rank 1 of 2", "Process name: [[1,1],1]"]));
    }

    [Fact]
    public void A_worker_slot_never_takes_a_job_asking_for_several_hosts()
    {
        var several = Anneal.Server.Workers.ComputeRequest.Of("""{"effective_config":{"compute":{"gpu_type":"H100","gpu_count":1,"nodes":2}}}""");
        Assert.Equal(2, several!.Nodes);
        var (fits, why) = Anneal.Server.Workers.Placement.Check(several, "H100", 8);
        Assert.False(fits);
        Assert.Contains("on 2 nodes; several hosts per job are not supported yet", why);
        Assert.True(Anneal.Server.Workers.Placement.Check(Anneal.Server.Workers.ComputeRequest.Of("""{"effective_config":{"compute":{"gpu_type":"H100","gpu_count":1,"nodes":1}}}"""), "H100", 1).Fits);
    }
}
