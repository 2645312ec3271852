// Checkpoints and LoRA: a resumed run continues the same loss curve (full fine-tune, and LoRA with
// dropout, whose randomness must be restored too); LoRA writes the PEFT layout, and merging the
// adapter into the base gives the same logits as the adapted model.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class ResumeAndLoraTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-resume-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData(TrainingModes.FullFinetune)]
    [InlineData(TrainingModes.Lora)]
    public void Resumed_run_continues_the_same_loss_curve(string mode)
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings
        {
            Mode = mode, TotalSteps = 6, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 2e-3,
            WarmupRatio = 0.2, LrScheduler = "cosine", WeightDecay = 0.01, SaveSteps = 3, Seed = 11,
            Lora = new LoraSettings(R: 4, Alpha: 8, Dropout: 0.1),
        };
        var straight = Path.Combine(dir, "straight");
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(straight, data, settings));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var full = TinyFixture.Losses(events);
        var saved = events.Where(e => e.Type == EventTypes.CheckpointSaved).Select(e => e.Data!["step"]!.GetValue<int>()).ToList();
        Assert.Equal([3, 6], saved);

        var checkpoint = Path.Combine(straight, "out", "checkpoints", "step-3");
        Assert.True(File.Exists(Path.Combine(checkpoint, TrainingCheckpoint.OptimizerFile)));
        Assert.True(File.Exists(Path.Combine(checkpoint, mode == TrainingModes.Lora ? Lora.AdapterWeightsFile : ModelFolder.WeightsFile)));
        var (exit2, events2, err2) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "resumed"), data, settings, resumeFrom: checkpoint));
        Assert.True(exit2 == 0, err2);
        var resumed = TinyFixture.Losses(events2);
        output.WriteLine($"{string.Join(" ", full)}\n{string.Join(" ", resumed)}");
        Assert.Equal(3, resumed.Count);
        Assert.Equal(events2.Where(e => e.Type == EventTypes.Progress).Select(e => e.Data!["step"]!.GetValue<int>()), [4, 5, 6]);
        for (var i = 0; i < 3; i++) Assert.Equal(full[3 + i], resumed[i], 1e-6);
    }

    [Fact]
    public void Only_the_latest_checkpoints_keep_optimizer_state()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings { TotalSteps = 4, PerDeviceBatch = 4, SaveSteps = 1, LearningRate = 1e-3 };
        var (exit, _, err) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings));
        Assert.True(exit == 0, err);
        string Checkpoint(int step) => Path.Combine(dir, "out", "checkpoints", $"step-{step}");
        Assert.All(new[] { 1, 2, 3, 4 }, s => Assert.True(File.Exists(Path.Combine(Checkpoint(s), "model.safetensors"))));
        Assert.Equal([false, false, true, true], new[] { 1, 2, 3, 4 }.Select(s => File.Exists(Path.Combine(Checkpoint(s), TrainingCheckpoint.OptimizerFile))));

        // The server picks resume_from: a broken one is its own state, never the user's error.
        var (exit2, events2, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "again"), data, settings, resumeFrom: Checkpoint(1)));
        Assert.Equal(TrainerProcess.ExitFailed, exit2);
        Assert.Contains("optimizer.bin is missing", events2[^1].Message);
        Assert.Equal(ErrorCodes.Internal, events2[^1].Data!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public void A_resumed_run_never_prunes_the_checkpoint_it_resumed_from()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings { TotalSteps = 2, PerDeviceBatch = 4, SaveSteps = 2, LearningRate = 1e-3 };
        Assert.Equal(0, TinyFixture.Run(TinyFixture.Spec(dir, data, settings)).Exit);
        string Checkpoint(int step) => Path.Combine(dir, "out", "checkpoints", $"step-{step}");

        // Same output folder, as a re-queued job: steps 3..6 are saved, only the newest two keep optimizer.bin,
        // and step-2 (the resume point, maybe the only one the server knows) keeps it too.
        var (exit, _, err) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings with { TotalSteps = 6, SaveSteps = 1 }, resumeFrom: Checkpoint(2)));
        Assert.True(exit == 0, err);
        Assert.Equal([true, false, false, true, true], new[] { 2, 3, 4, 5, 6 }.Select(s => File.Exists(Path.Combine(Checkpoint(s), TrainingCheckpoint.OptimizerFile))));
    }

    [Fact]
    public async Task Checkpoint_and_stop_saves_the_step_it_stops_at()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings { TotalSteps = 50, PerDeviceBatch = 4, LearningRate = 1e-3 }; // no save_steps
        using var stop = new CancellationTokenSource();
        var stdout = new StopAfterStep(3, stop);
        var exit = await TrainerProcess.RunAsync(TinyFixture.Spec(dir, data, settings), stdout, new StringWriter(), CancellationToken.None,
            new TrainerOptions { CheckpointAndStop = stop.Token });
        Assert.Equal(TrainerProcess.ExitCancelled, exit);
        var events = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => System.Text.Json.JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
        var saved = Assert.Single(events, e => e.Type == EventTypes.CheckpointSaved);
        Assert.Equal(3, saved.Data!["step"]!.GetValue<int>());
        Assert.Equal(EventTypes.Cancelled, events[^1].Type);
        var folder = Path.Combine(dir, "out", "checkpoints", "step-3");
        Assert.True(File.Exists(Path.Combine(folder, TrainingCheckpoint.OptimizerFile)));
        Assert.Equal(3, TrainingCheckpoint.ReadState(folder).Step);
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "final")));
    }

    /// <summary>Captures events and asks for a checkpoint-and-stop once progress reaches a step.</summary>
    sealed class StopAfterStep(int step, CancellationTokenSource stop) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null && value.Contains($"\"step\":{step},", StringComparison.Ordinal) && value.Contains(EventTypes.Progress, StringComparison.Ordinal))
                stop.Cancel();
        }
    }

    [Fact]
    public void Resume_with_a_different_batch_is_a_config_error()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings { TotalSteps = 2, PerDeviceBatch = 2, SaveSteps = 1, LearningRate = 1e-3 };
        var (exit, _, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "a"), data, settings));
        Assert.Equal(0, exit);
        var checkpoint = Path.Combine(dir, "a", "out", "checkpoints", "step-1");
        var (exit2, events2, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "b"), data, settings with { PerDeviceBatch = 4 }, resumeFrom: checkpoint));
        Assert.Equal(TrainerProcess.ExitUserError, exit2);
        var failed = Assert.Single(events2, e => e.Type == EventTypes.Failed);
        Assert.Equal(ErrorCodes.UserConfigError, failed.Data!["error"]!["code"]!.GetValue<string>());
        Assert.Contains("per_device_batch 2", failed.Message);
    }

    [Fact]
    public void Lora_run_writes_peft_adapter_and_a_merged_model_that_matches_it()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var validation = TinyFixture.WriteChatSet(dir, "val.jsonl");
        var settings = new TrainingSettings
        {
            Mode = TrainingModes.Lora, TotalSteps = 4, PerDeviceBatch = 4, LearningRate = 5e-3, Seed = 5,
            Lora = new LoraSettings(R: 8, Alpha: 16, Dropout: 0.0, TargetModules: ["q_proj", "v_proj", "down_proj"]),
            Validation = new ValidationSettings(Enabled: true, EvalSteps: 2, SaveBestModelAtEnd: true),
        };
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings, validationFile: validation, mergeLora: true));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        Assert.Equal([2, 4], events.Where(e => e.Type == EventTypes.ValidationSummary).Select(e => e.Data!["step"]!.GetValue<int>()));

        var completed = Assert.Single(events, e => e.Type == EventTypes.Completed);
        var final = completed.Data!["final_path"]!.GetValue<string>();
        var merged = completed.Data!["merged_path"]!.GetValue<string>();

        // PEFT layout.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(final, "adapter_config.json")))!;
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.Equal(8, config["r"]!.GetValue<int>());
        Assert.Equal(16, config["lora_alpha"]!.GetValue<double>());
        Assert.Equal(["q_proj", "v_proj", "down_proj"], config["target_modules"]!.AsArray().Select(x => x!.GetValue<string>()));
        var adapter = SafetensorsFile.Open(Path.Combine(final, "adapter_model.safetensors"));
        Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", adapter.Entries.Keys);
        Assert.Contains("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight", adapter.Entries.Keys);
        Assert.Equal([8, 128], adapter.Entries["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
        Assert.Equal(4 * 3 * 2, adapter.Entries.Count);
        Assert.DoesNotContain(adapter.Entries.Keys, k => !k.Contains("lora_"));

        // The merged folder is a plain Qwen3 model; its logits equal base + adapter.
        var lora = new LoraSettings(R: 8, Alpha: 16, TargetModules: ["q_proj", "v_proj", "down_proj"]);
        using var adapted = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32, lora);
        Lora.LoadAdapter(adapted, final);
        using var plain = ModelFolder.Load(merged, torch.CPU, torch.ScalarType.Float32);
        Assert.DoesNotContain(plain.named_parameters(), p => p.name.Contains("lora"));
        adapted.eval(); plain.eval();
        using var _ = torch.no_grad();
        using var ids = torch.tensor(new long[] { 1, 5, 9, 40, 77, 3, 200, 11 }).view(1, -1);
        using var pos = torch.arange(8, dtype: torch.ScalarType.Int64).view(1, -1);
        using var a = adapted.call(ids, pos, null);
        using var b = plain.call(ids, pos, null);
        using var baseModel = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        using var c = baseModel.call(ids, pos, null);
        var diff = TestTensors.MaxDiff(a, b);
        output.WriteLine($"merged vs adapted max diff {diff:E2}; adapted vs base {TestTensors.MaxDiff(a, c):E2}");
        Assert.True(diff < 1e-4, $"merged logits differ by {diff}");
        Assert.True(TestTensors.MaxDiff(a, c) > 1e-3, "the adapter changed nothing");
    }

    [Fact]
    public void Save_best_model_at_end_restores_the_best_evaluated_weights()
    {
        // greater_is_better on a falling validation loss makes the first evaluation (step 2) the best.
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings
        {
            TotalSteps = 4, PerDeviceBatch = 4, LearningRate = 3e-3, SaveSteps = 2, Seed = 2,
            Validation = new ValidationSettings(Enabled: true, EvalSteps: 2, SaveBestModelAtEnd: true, GreaterIsBetter: true),
        };
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings, validationFile: data));
        Assert.True(exit == 0, err);
        var val = events.Where(e => e.Type == EventTypes.ValidationSummary).Select(e => e.Data!["val_loss"]!.GetValue<double>()).ToList();
        Assert.Equal(2, val.Count);
        Assert.True(val[1] < val[0]);
        var final = SafetensorsSet.OpenFolder(Path.Combine(dir, "out", "final"));
        var atStep2 = SafetensorsSet.OpenFolder(Path.Combine(dir, "out", "checkpoints", "step-2"));
        var atStep4 = SafetensorsSet.OpenFolder(Path.Combine(dir, "out", "checkpoints", "step-4"));
        const string name = "model.layers.1.mlp.up_proj.weight";
        Assert.True(TestTensors.Same(atStep2.Read(name), final.Read(name)));
        Assert.False(TestTensors.Same(atStep4.Read(name), final.Read(name)));
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "best")));
    }
}
