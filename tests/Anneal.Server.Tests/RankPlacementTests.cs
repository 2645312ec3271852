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
}
