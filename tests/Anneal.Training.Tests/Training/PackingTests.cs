// The `packing` hyperparameter: a job that sets it trains on packed rows, and its first step sees the
// same examples as the bucketed run, so the two step-1 losses (Σ token losses / trained tokens over
// identical weights) agree up to float rounding. Token-budget bucketing: micro-batches hold as many
// length-sorted examples as fit in per_device_batch × sequence_length padded tokens.
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Data;
using Anneal.Training.Tokenization;
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

    [Fact]
    public void Token_budget_plans_fill_micro_batches_up_to_the_budget_and_cover_every_example_once()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        var path = TinyFixture.WriteChatSet(dir, "budget.jsonl", repeat: 6);   // 48 short examples
        var examples = SftData.Load(path, r => { var e = Qwen3ChatTemplate.Encode(tokenizer, r); return (e.InputIds, e.Trained); }, 512).Examples;
        const int B = 2, G = 2, T = 128;
        var plan = SftData.PlanEpoch(examples, 4, 0, B, G, T, packing: false, tokenBudget: true);
        Assert.Equal(Flat(plan), Flat(SftData.PlanEpoch(examples, 4, 0, B, G, T, packing: false, tokenBudget: true)));
        Assert.Equal(Enumerable.Range(0, examples.Count), plan.SelectMany(s => s).SelectMany(m => m).SelectMany(r => r).Order());
        Assert.All(plan, step => Assert.InRange(step.Count, 1, G));
        var micros = plan.SelectMany(s => s).ToList();
        Assert.All(micros, m => Assert.True(m.Count == 1 || m.Count * m.Max(r => examples[r[0]].Length) <= B * T,
            $"{m.Count} rows of up to {m.Max(r => examples[r[0]].Length)} tokens exceed the budget {B * T}"));
        // Short examples (about 30 tokens) make micro-batches wider than per_device_batch.
        Assert.Contains(micros, m => m.Count > B);
        Assert.True(plan.Count < SftData.PlanEpoch(examples, 4, 0, B, G, T, packing: false).Count);
        output.WriteLine($"{plan.Count} steps, micro-batch rows: {string.Join(" ", micros.Select(m => m.Count))}");

        static string Flat(List<List<List<int[]>>> p) => string.Join("|", p.Select(s => string.Join(";", s.Select(m => string.Join(",", m.Select(r => r[0]))))));
    }

    [Fact]
    public void Token_budget_run_trains()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2);
        var settings = new TrainingSettings
        {
            TotalSteps = 4, PerDeviceBatch = 1, GradientAccumulationSteps = 2, LearningRate = 3e-3, Seed = 5,
            SequenceLength = 96, LrScheduler = "constant",
        };
        var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings), new TrainerOptions { TokenBudget = true });
        Assert.True(exit == 0, stderr);
        var losses = TinyFixture.Losses(events);
        output.WriteLine(string.Join(" ", losses));
        Assert.Equal(4, losses.Count);
        Assert.True(losses[^1] < losses[0], "the token-budget run did not train");
        // 16 examples of about 30 tokens, budget 96 tokens a micro-batch: several examples in each, so an
        // epoch has fewer than the 8 steps of plain bucketing (16 rows / (1 × 2)) and 4 steps pass half an epoch.
        var epoch = events.Last(e => e.Type == EventTypes.Progress).Data!["epoch"]!.GetValue<double>();
        Assert.True(epoch > 0.5, $"epoch {epoch} after 4 steps: micro-batches were not filled to the budget");
    }
}
