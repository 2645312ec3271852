// The `batching` hyperparameter. Packed (also the old `packing = true`): a job trains on packed rows,
// and its first step sees the same examples as the bucketed run, so the two step-1 losses (Σ token
// losses / trained tokens over identical weights) agree up to float rounding. token_budget: the
// steps of padded, cut into fewer, wider micro-batches within the padded worst case, so its losses
// equal padded's step for step. Every mode trains.
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Data;
using Anneal.Training.Tokenization;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class BatchingTests(ITestOutputHelper output) : IDisposable
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
    public void Token_budget_keeps_the_steps_of_padded_in_fewer_forward_passes_within_the_budget()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        var path = TinyFixture.WriteChatSet(dir, "budget.jsonl", repeat: 6, system: "Answer briefly.");   // 48 examples
        var examples = SftData.Load(path, r => { var e = Qwen3ChatTemplate.Encode(tokenizer, r); return (e.InputIds, e.Trained); }, 512).Examples;
        // Lengths vary a lot in real data; stretch some examples so sorting has something to do.
        var lengths = examples.Select((e, i) => i % 5 == 0 ? e.Length * 4 : e.Length).ToList();
        const int B = 2, G = 4, T = 512;
        var budget = StepPlan.Epoch(lengths, 4, 1, BatchingModes.TokenBudget, B, G, T);
        var padded = StepPlan.Epoch(lengths, 4, 1, BatchingModes.Padded, B, G, T);
        Assert.Equal(Flat(budget), Flat(StepPlan.Epoch(lengths, 4, 1, BatchingModes.TokenBudget, B, G, T)));

        // The same examples in every optimizer step, so the same loss per step.
        Assert.Equal(padded.Count, budget.Count);
        for (var s = 0; s < padded.Count; s++)
            Assert.Equal(Examples(padded[s]).Order(), Examples(budget[s]).Order());
        Assert.Equal(Enumerable.Range(0, lengths.Count), budget.SelectMany(Examples).Order());

        // No micro-batch holds more padded tokens than the largest padded one can: B × the longest example.
        var limit = B * lengths.Max();
        var micros = budget.SelectMany(s => s).ToList();
        Assert.All(micros, m => Assert.True(m.Count * m.Max(r => lengths[r[0]]) <= limit,
            $"{m.Count} rows of up to {m.Max(r => lengths[r[0]])} tokens exceed the budget {limit}"));
        // Short examples make micro-batches wider than per_device_batch: fewer forward passes, less padding.
        Assert.Contains(micros, m => m.Count > B);
        Assert.True(micros.Count < padded.Sum(s => s.Count), $"{micros.Count} forward passes, padded has {padded.Sum(s => s.Count)}");
        long Padded(IReadOnlyList<List<List<int[]>>> plan) => plan.SelectMany(s => s).Sum(m => (long)m.Count * m.Max(r => lengths[r[0]]));
        Assert.True(Padded(budget) < Padded(padded), $"padded tokens {Padded(budget)} vs {Padded(padded)}");
        output.WriteLine($"{budget.Count} steps; forward passes {micros.Count} vs {padded.Sum(s => s.Count)}; padded tokens {Padded(budget)} vs {Padded(padded)}");

        static IEnumerable<int> Examples(List<List<int[]>> step) => step.SelectMany(m => m).SelectMany(r => r);
        static string Flat(IReadOnlyList<List<List<int[]>>> p) => string.Join("|", p.Select(s => string.Join(";", s.Select(m => string.Join(",", m.Select(r => r[0]))))));
    }

    [Fact]
    public void Every_batching_mode_trains_and_token_budget_matches_padded_step_for_step()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2, system: "Answer briefly.");
        var losses = new Dictionary<string, List<double>>();
        foreach (var batching in BatchingModes.All)
        {
            var settings = new TrainingSettings
            {
                TotalSteps = 4, PerDeviceBatch = 1, GradientAccumulationSteps = 4, LearningRate = 3e-3, Seed = 5,
                SequenceLength = 128, LrScheduler = "constant", Batching = batching,
            };
            var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, batching), data, settings));
            Assert.True(exit == 0, stderr);
            var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;
            Assert.Equal(batching, prepared["batching"]!.GetValue<string>());
            // The memory plan's largest micro-batch is the one this batching can build.
            var planned = Assert.Single(events, e => e.Type == EventTypes.MemoryPlanned).Data!;
            var longest = Math.Min(128, prepared["longest_example_tokens"]!.GetValue<int>());
            Assert.Equal(batching == BatchingModes.Packed ? 128 : longest, planned["row_tokens"]!.GetValue<int>());
            Assert.Equal(1, planned["micro_batch_rows"]!.GetValue<int>());
            losses[batching] = TinyFixture.Losses(events);
            output.WriteLine($"{batching,-13} forward passes/epoch {prepared["forward_passes_per_epoch"]}: {string.Join(" ", losses[batching].Select(l => l.ToString("F5")))}");
            Assert.Equal(4, losses[batching].Count);
            Assert.True(losses[batching][^1] < losses[batching][0], $"{batching} did not train");
        }
        for (var i = 0; i < 4; i++) Assert.Equal(losses[BatchingModes.Padded][i], losses[BatchingModes.TokenBudget][i], 1e-4);
    }
}
