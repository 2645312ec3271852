// The loss and batching invariants the trainer promises: gradient accumulation does not change the
// loss or the gradient; packed rows do not attend across examples; the KV cache decodes exactly
// like full recomputation; the learning-rate schedule has the documented shape.
using Anneal.Core.Training;
using Anneal.Core.Contracts;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class TrainingMathTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-math-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    List<SftExample> Examples(Qwen3Tokenizer tokenizer)
    {
        var path = TinyFixture.WriteChatSet(dir, system: "Answer briefly.");
        return SftData.Load(path, r => { var e = Qwen3ChatTemplate.Encode(tokenizer, r); return (e.InputIds, e.Trained); }, 512).Examples;
    }

    [Fact]
    public void Accumulating_four_batches_of_one_equals_one_batch_of_four()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        var examples = Examples(tokenizer);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        int[][] rows = [[0], [3], [5], [6]];   // different lengths: padding is exercised

        var big = new[] { SftData.Collate(examples, rows, tokenizer.PadTokenId, torch.CPU) };
        var n = big[0].TrainedTokens;
        var lossBig = Trainer.AccumulateGradients(model, big, n);
        var gradsBig = model.parameters().Select(p => p.grad!.clone()).ToList();
        model.zero_grad();

        var small = rows.Select(r => SftData.Collate(examples, [r], tokenizer.PadTokenId, torch.CPU)).ToList();
        Assert.Equal(n, small.Sum(b => b.TrainedTokens));
        var lossSmall = Trainer.AccumulateGradients(model, small, n);
        var gradsSmall = model.parameters().Select(p => p.grad!.clone()).ToList();

        output.WriteLine($"loss {lossBig} vs {lossSmall}");
        Assert.Equal(lossBig, lossSmall, 1e-5);
        var worst = gradsBig.Zip(gradsSmall).Max(g => TestTensors.MaxDiff(g.First, g.Second) / (g.First.abs().max().item<float>() + 1e-12));
        output.WriteLine($"max relative grad diff {worst:E2}");
        Assert.True(worst < 1e-4, $"gradients differ: {worst}");
        foreach (var b in big.Concat(small)) b.Dispose();
    }

    [Fact]
    public void Trainer_losses_are_the_same_with_batch_4x1_and_1x4()
    {
        var data = TinyFixture.WriteChatSet(dir);
        TrainingSettings Settings(int b, int g) => new()
        {
            TotalSteps = 3, PerDeviceBatch = b, GradientAccumulationSteps = g, LearningRate = 1e-3, Seed = 3,
        };
        var (e1, ev1, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "a"), data, Settings(4, 1)));
        var (e2, ev2, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "b"), data, Settings(1, 4)));
        Assert.Equal(0, e1);
        Assert.Equal(0, e2);
        var (l1, l2) = (TinyFixture.Losses(ev1), TinyFixture.Losses(ev2));
        output.WriteLine($"{string.Join(" ", l1)}\n{string.Join(" ", l2)}");
        Assert.Equal(3, l1.Count);
        for (var i = 0; i < 3; i++) Assert.Equal(l1[i], l2[i], 1e-4);
    }

    [Fact]
    public void Packed_rows_give_each_example_the_logits_it_has_alone()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        var examples = Examples(tokenizer);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        model.eval();
        using var _ = torch.no_grad();

        using var packed = SftData.Collate(examples, [[1, 2], [4]], tokenizer.PadTokenId, torch.CPU);
        Assert.NotNull(packed.Mask);
        using var logits = model.call(packed.Ids, packed.Positions, packed.Mask);          // (2, T, V)
        var offset = 0;
        foreach (var i in new[] { 1, 2 })
        {
            using var alone = SftData.Collate(examples, [[i]], tokenizer.PadTokenId, torch.CPU);
            using var reference = model.call(alone.Ids, alone.Positions, null);              // (1, L, V)
            var L = examples[i].Length;
            var diff = TestTensors.MaxDiff(logits[0].narrow(0, offset, L), reference[0]);
            output.WriteLine($"example {i}: max diff {diff:E2}");
            Assert.True(diff < 1e-4, $"example {i} differs by {diff}");
            offset += L;
        }
        // The loss over a packed batch equals the sum over its examples alone.
        using var packedLoss = Trainer.TokenLossSum(model, packed);
        var separate = new[] { 1, 2, 4 }.Sum(i =>
        {
            using var b = SftData.Collate(examples, [[i]], tokenizer.PadTokenId, torch.CPU);
            using var l = Trainer.TokenLossSum(model, b);
            return l.item<float>();
        });
        Assert.Equal(separate, packedLoss.item<float>(), 1e-3);
    }

    [Fact]
    public void Epoch_plans_are_deterministic_and_cover_every_example_once()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        var path = TinyFixture.WriteChatSet(dir, "plan.jsonl", repeat: 4);   // 32 examples, 8 steps of 4
        var examples = SftData.Load(path, r => { var e = Qwen3ChatTemplate.Encode(tokenizer, r); return (e.InputIds, e.Trained); }, 512).Examples;
        var lengths = examples.Select(e => e.Length).ToList();
        foreach (var batching in BatchingModes.All)
        {
            var packing = batching == BatchingModes.Packed;
            var a = StepPlan.Epoch(lengths, 5, 2, batching, 2, 2, 64);
            var b = StepPlan.Epoch(lengths, 5, 2, batching, 2, 2, 64);
            var c = StepPlan.Epoch(lengths, 5, 3, batching, 2, 2, 64);
            static string Flat(IReadOnlyList<List<List<int[]>>> p) => string.Join("|", p.SelectMany(s => s).SelectMany(m => m).Select(r => string.Join(",", r)));
            Assert.Equal(Flat(a), Flat(b));
            Assert.NotEqual(Flat(a), Flat(c));
            Assert.Equal(Enumerable.Range(0, examples.Count), a.SelectMany(s => s).SelectMany(m => m).SelectMany(r => r).Order());
            if (packing)
                Assert.All(a.SelectMany(s => s).SelectMany(m => m), row => Assert.True(row.Length == 1 || row.Sum(i => examples[i].Length) <= 64));
        }
    }

    [Fact]
    public void Kv_cache_decoding_equals_full_recomputation()
    {
        var tokenizer = Qwen3Tokenizer.Load(TinyFixture.ModelDir);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        var prompt = Generation.PromptIds(tokenizer, "Hello there");
        var cached = Generation.Greedy(model, prompt, 8, new HashSet<int>());

        var ids = prompt.ToList();
        using (torch.no_grad())
            for (var i = 0; i < 8; i++)
            {
                using var t = torch.tensor(ids.Select(x => (long)x).ToArray()).view(1, -1);
                using var pos = torch.arange(ids.Count, dtype: torch.ScalarType.Int64).view(1, -1);
                using var logits = model.call(t, pos, null);
                ids.Add((int)logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(ids.Skip(prompt.Length), cached);
    }

    [Theory]
    [InlineData(false, TrainingModes.FullFinetune)]
    [InlineData(true, TrainingModes.FullFinetune)]
    [InlineData(true, TrainingModes.Lora)]
    public void Activation_checkpointing_does_not_change_the_losses(bool packing, string mode)
    {
        var data = TinyFixture.WriteChatSet(dir);
        TrainingSettings Settings(string checkpointing) => new()
        {
            Mode = mode, TotalSteps = 3, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 2e-3, Seed = 9,
            SequenceLength = 96, ActivationCheckpointing = checkpointing, Lora = new LoraSettings(R: 4, Alpha: 8),
            Batching = packing ? BatchingModes.Packed : BatchingModes.Bucketed,
        };
        var options = new TrainerOptions();
        var (e1, ev1, err1) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "off"), data, Settings("off")), options);
        var (e2, ev2, err2) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "on"), data, Settings("on")), options);
        Assert.True(e1 == 0, err1);
        Assert.True(e2 == 0, err2);
        var (off, on) = (TinyFixture.Losses(ev1), TinyFixture.Losses(ev2));
        output.WriteLine($"{string.Join(" ", off)}\n{string.Join(" ", on)}");
        Assert.Equal(3, on.Count);
        for (var i = 0; i < 3; i++) Assert.Equal(off[i], on[i], 1e-5);
    }

    [Fact]
    public void Activation_checkpointing_with_lora_dropout_trains_like_without()
    {
        // The checkpointed re-run replays the dropout masks of the forward: the same losses, step for step.
        var data = TinyFixture.WriteChatSet(dir);
        TrainingSettings Settings(string checkpointing) => new()
        {
            Mode = TrainingModes.Lora, TotalSteps = 3, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 2e-3, Seed = 5,
            SequenceLength = 96, ActivationCheckpointing = checkpointing, Lora = new LoraSettings(R: 4, Alpha: 8, Dropout: 0.05),
        };
        var (e1, ev1, err1) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "off"), data, Settings("off")));
        var (e2, ev2, err2) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "on"), data, Settings("on")));
        Assert.True(e1 == 0, err1);
        Assert.True(e2 == 0, err2);
        Assert.Contains(ev2, e => e.Type == EventTypes.MemoryPlanned && e.Data?["activation_checkpointing"]?.GetValue<bool>() == true);
        var (off, on) = (TinyFixture.Losses(ev1), TinyFixture.Losses(ev2));
        output.WriteLine($"{string.Join(" ", off)}\n{string.Join(" ", on)}");
        Assert.Equal(3, on.Count);
        for (var i = 0; i < 3; i++) Assert.Equal(off[i], on[i], 1e-5);
        // Dropout is really on: without it the losses differ.
        var (e3, ev3, err3) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "nodrop"), data, Settings("on") with { Lora = new LoraSettings(R: 4, Alpha: 8) }));
        Assert.True(e3 == 0, err3);
        Assert.NotEqual(on[^1], TinyFixture.Losses(ev3)[^1]);
    }

    [Fact]
    public void Learning_rate_schedules_warm_up_then_decay()
    {
        var s = new TrainingSettings { LearningRate = 1.0, WarmupRatio = 0.1 };
        double Lr(string kind, int step) => Trainer.LearningRate(s with { LrScheduler = kind }, step, 10, 100);
        Assert.Equal(0.1, Lr("linear", 1), 9);
        Assert.Equal(1.0, Lr("linear", 10), 9);
        Assert.Equal(1.0, Lr("linear", 11), 9);
        Assert.Equal(0.5, Lr("linear", 56), 9);
        Assert.True(Lr("linear", 100) is > 0 and < 0.02);
        Assert.Equal(0.5, Lr("cosine", 56), 9);
        Assert.Equal(1.0, Lr("constant", 100), 9);
    }
}
