// End-to-end training of the tiny Qwen3 on CPU through TrainerProcess: the loss falls, the model
// answers a memorised question by greedy decoding, and the output folders are complete.
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class TrainerTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-train-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public async Task Full_finetune_memorises_the_answers()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings
        {
            TotalSteps = 40, PerDeviceBatch = 8, GradientAccumulationSteps = 1, LearningRate = 3e-3,
            WarmupRatio = 0.1, LrScheduler = "constant", WeightDecay = 0.0, Seed = 7,
        };
        var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings));
        output.WriteLine(stderr);
        Assert.True(exit == 0, string.Join("\n", events.Select(e => e.Message)));
        var losses = TinyFixture.Losses(events);
        output.WriteLine(string.Join(" ", losses.Select(l => l.ToString("F3"))));
        output.WriteLine($"tokens/s (last step): {events.Last(e => e.Type == EventTypes.Progress).Data!["tokens_per_second"]}");
        Assert.Equal(40, losses.Count);
        Assert.True(losses[^1] < 0.1, $"loss did not fall far enough: {losses[^1]}");
        Assert.True(losses.TakeLast(5).Average() < 0.05 * losses.Take(5).Average(), "loss did not fall");

        var completed = Assert.Single(events, e => e.Type == EventTypes.Completed);
        var final = completed.Data!["final_path"]!.GetValue<string>();
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            Assert.True(File.Exists(Path.Combine(final, f)), f);

        var stdout = new StringWriter();
        var err = new StringWriter();
        var code = await TrainerProcess.GenerateAsync(final, TinyFixture.Facts[0].Question, 30, stdout, err, default);
        output.WriteLine(stdout.ToString() + err);
        Assert.Equal(0, code);
        // The model learnt Qwen3's empty think block too; the answer follows it.
        var answer = stdout.ToString().Trim();
        Assert.StartsWith("<think>", answer);
        Assert.Equal(TinyFixture.Facts[0].Answer, answer[(answer.IndexOf("</think>") + "</think>".Length)..].Trim());
    }

    [Fact]
    public async Task Spec_file_run_generates_the_tiny_model_and_reports_each_phase()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var modelPath = Path.Combine(dir, "models", "anneal", "tiny-qwen3");   // missing: generated on demand
        var spec = TinyFixture.Spec(dir, data, new TrainingSettings { TotalSteps = 2, PerDeviceBatch = 4, LearningRate = 1e-3, SaveSteps = 2 }, modelPath: modelPath);
        var specPath = Path.Combine(dir, "spec.json");
        File.WriteAllText(specPath, System.Text.Json.JsonSerializer.Serialize(spec, AnnealJson.Options));

        var stdout = new StringWriter();
        var exit = await TrainerProcess.RunAsync(specPath, stdout, new StringWriter(), default);
        var events = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => System.Text.Json.JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
        Assert.True(exit == 0, stdout.ToString());
        Assert.Equal(
            [EventTypes.ModelLoading, EventTypes.DataPrepared, EventTypes.MemoryPlanned, EventTypes.Progress, EventTypes.Progress, EventTypes.CheckpointSaved, EventTypes.Completed],
            events.Select(e => e.Type));
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            Assert.True(File.Exists(Path.Combine(modelPath, f)), f);
        Assert.Equal(File.ReadAllBytes(Path.Combine(TinyFixture.ModelDir, "model.safetensors")), File.ReadAllBytes(Path.Combine(modelPath, "model.safetensors")));

        var prepared = events[1].Data!;
        Assert.Equal(8, prepared["examples"]!.GetValue<int>());
        Assert.Equal(0, prepared["truncated"]!.GetValue<int>());
        Assert.True(prepared["trained_tokens"]!.GetValue<long>() < prepared["tokens"]!.GetValue<long>());
        Assert.Contains("<|im_start|>assistant", prepared["example"]!["text"]!.GetValue<string>());
        Assert.Contains("[[", prepared["example"]!["mask_preview"]!.GetValue<string>());

        var progress = events[3].Data!;
        Assert.Equal(2, progress["step"]!.GetValue<int>());
        Assert.Equal(2, progress["total_steps"]!.GetValue<int>());
        foreach (var key in new[] { "epoch", "loss", "lr", "grad_norm", "tokens_per_second", "eta_seconds", "trained_tokens" })
            Assert.NotNull(progress[key]);
        Assert.Equal(Path.Combine(dir, "out", "checkpoints", "step-2"), events[4].Data!["path"]!.GetValue<string>());
        Assert.Equal(prepared["trained_tokens"]!.GetValue<long>(), events[5].Data!["trained_tokens"]!.GetValue<long>());
    }

    [Fact]
    public void Truncation_to_sequence_length_is_counted()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, new TrainingSettings { TotalSteps = 1, PerDeviceBatch = 8, SequenceLength = 30, LearningRate = 1e-3 }));
        Assert.Equal(0, exit);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;
        Assert.Equal(8, prepared["examples"]!.GetValue<int>());
        Assert.InRange(prepared["truncated"]!.GetValue<int>(), 1, 8);
        Assert.True(prepared["tokens"]!.GetValue<long>() <= 30 * 8);

        // A system prompt that fills the whole window leaves nothing to train on: a data error.
        var longPrompt = TinyFixture.WriteChatSet(dir, "long.jsonl", system: "You are a helpful assistant that answers questions about the world in one short sentence.");
        var (exit2, events2, _) = TinyFixture.Run(TinyFixture.Spec(dir, longPrompt, new TrainingSettings { TotalSteps = 1, SequenceLength = 30, LearningRate = 1e-3 }));
        Assert.Equal(TrainerProcess.ExitUserError, exit2);
        var failed = Assert.Single(events2, e => e.Type == EventTypes.Failed);
        Assert.Equal(ErrorCodes.UserDataError, failed.Data!["error"]!["code"]!.GetValue<string>());
        Assert.Contains("sequence_length 30", failed.Message);
    }

    [Fact]
    public void Cpu_bf16_training_learns_and_saves_bf16_weights()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings { TotalSteps = 4, PerDeviceBatch = 8, LearningRate = 3e-3, LrScheduler = "constant" };
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings), new TrainerOptions { CpuBf16 = true });
        Assert.True(exit == 0, err);
        Assert.Contains("BFloat16", events[0].Message);
        var losses = TinyFixture.Losses(events);
        Assert.True(losses[^1] < 0.9 * losses[0], string.Join(" ", losses));
        var saved = SafetensorsFile.Open(Path.Combine(dir, "out", "final", "model.safetensors"));
        Assert.All(saved.Entries.Values, e => Assert.Equal("BF16", e.DType));
    }
}
