// The `packing` hyperparameter: a job that sets it trains on packed rows, and its first step sees the
// same examples as the bucketed run, so the two step-1 losses (Σ token losses / trained tokens over
// identical weights) agree up to float rounding.
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class PackingTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-pack-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Packing_hyperparameter_trains_packed_rows_with_the_bucketed_first_loss()
    {
        var data = TinyFixture.WriteChatSet(dir);   // 8 examples: one step of 8 rows when bucketing
        TrainingSettings Settings(bool packing) => new()
        {
            TotalSteps = 3, PerDeviceBatch = 8, GradientAccumulationSteps = 1, LearningRate = 2e-3, Seed = 3,
            SequenceLength = 256, LrScheduler = "constant", Packing = packing,
        };
        // The setting travels in spec.json like every other hyperparameter.
        var packedSpec = TinyFixture.Spec(Path.Combine(dir, "packed"), data, Settings(true));
        packedSpec = JsonSerializer.Deserialize<TrainerJobSpec>(JsonSerializer.Serialize(packedSpec, AnnealJson.Options), AnnealJson.Options)!;
        Assert.True(packedSpec.Settings.Packing);

        var (e1, bucketed, err1) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "bucketed"), data, Settings(false)));
        var (e2, packed, err2) = TinyFixture.Run(packedSpec);
        Assert.True(e1 == 0, err1);
        Assert.True(e2 == 0, err2);

        var p1 = Assert.Single(bucketed, e => e.Type == EventTypes.DataPrepared).Data!;
        var p2 = Assert.Single(packed, e => e.Type == EventTypes.DataPrepared).Data!;
        Assert.False(p1["packing"]!.GetValue<bool>());
        Assert.Equal(8, p1["rows"]!.GetValue<int>());
        Assert.True(p2["packing"]!.GetValue<bool>());
        var rows = p2["rows"]!.GetValue<int>();
        Assert.InRange(rows, 1, 7);
        Assert.Contains($"packed into {rows} rows", packed.Single(e => e.Type == EventTypes.DataPrepared).Message);

        var (lb, lp) = (TinyFixture.Losses(bucketed), TinyFixture.Losses(packed));
        output.WriteLine($"bucketed {string.Join(" ", lb)}\npacked   {string.Join(" ", lp)}");
        Assert.Equal(3, lp.Count);
        Assert.Equal(lb[0], lp[0], 1e-4);
        Assert.True(lp[^1] < lp[0], "the packed run did not train");
        var trained = packed.Where(e => e.Type == EventTypes.Progress).Select(e => e.Data!["trained_tokens"]!.GetValue<long>()).ToList();
        Assert.Equal(3 * p2["trained_tokens"]!.GetValue<long>(), trained[^1]);
    }
}
