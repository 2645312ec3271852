// The vision recipe's settings and checkpoints on the tiny Qwen3-VL model, on CPU:
// [model].max_pixels bounds the image tokens the trainer sees (and is written into the result's
// preprocessor_config.json); train_vision trains exactly the parts it names, the others stay
// bit-identical; save_steps checkpoints resume onto the same loss curve; a checkpoint-and-stop
// request (SIGUSR1) saves the step it stops at; the validation file is evaluated every eval_steps.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using SkiaSharp;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

public sealed class VisionSettingsTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-vision-settings-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    TrainerJobSpec Spec(string data, TrainingSettings settings, string outName = "out", string? resumeFrom = null, string? validation = null) =>
        new("job_vision", ModelRegistry.TinyVisionModelId, TinyFixture.VisionModelDir, data, validation, Path.Combine(dir, outName), settings, resumeFrom, "cpu", false);

    /// <summary>Four records, each with one 128×128 image (16 image tokens at the tiny model's default max_pixels 128²).</summary>
    string SquareSet()
    {
        var path = Path.Combine(dir, "squares.jsonl");
        File.WriteAllLines(path, VisionTrainingTests.Colours.Select(c => new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject
                {
                    ["role"] = "user", ["content"] = new JsonArray(
                        new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "data:image/png;base64," + Convert.ToBase64String(VisionTrainingTests.Png(c.Color, 128, 128)) } },
                        new JsonObject { ["type"] = "text", ["text"] = "Colour?" }),
                },
                new JsonObject { ["role"] = "assistant", ["content"] = $"It is {c.Name}." }),
        }.ToJsonString()));
        return path;
    }

    static JsonObject Prepared(List<TrainerEvent> events) => Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;

    [Fact]
    public void A_steps_loss_is_its_token_losses_over_the_steps_trained_tokens_whatever_the_split()
    {
        // Two examples whose answers differ in length, in one optimizer step: each trained token
        // weighs the same (Σ token losses / trained tokens of the step), not each example. Asked
        // for as per_device_batch 2 or as accumulation 2, the step is the same.
        var path = Path.Combine(dir, "uneven.jsonl");
        File.WriteAllLines(path, new[] { (VisionTrainingTests.Colours[0].Color, "Red."), (VisionTrainingTests.Colours[2].Color, "It is a blue square with a darker diagonal line from corner to corner.") }
            .Select(x => new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject
                    {
                        ["role"] = "user", ["content"] = new JsonArray(
                            new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "data:image/png;base64," + Convert.ToBase64String(VisionTrainingTests.Png(x.Color, 64, 64)) } },
                            new JsonObject { ["type"] = "text", ["text"] = "Colour?" }),
                    },
                    new JsonObject { ["role"] = "assistant", ["content"] = x.Item2 }),
            }.ToJsonString()));
        var settings = new TrainingSettings { TotalSteps = 1, PerDeviceBatch = 1, GradientAccumulationSteps = 2, LearningRate = 1e-3, LrScheduler = "constant", SequenceLength = 128, Seed = 5 };
        var (exit, events, err) = TinyFixture.Run(Spec(path, settings, "accumulated"));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var loss = Assert.Single(TinyFixture.Losses(events));
        (exit, events, err) = TinyFixture.Run(Spec(path, settings with { PerDeviceBatch = 2, GradientAccumulationSteps = 1 }, "batched"));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        Assert.Equal(loss, Assert.Single(TinyFixture.Losses(events)), 6);

        using var model = VisionModelFolder.Load(TinyFixture.VisionModelDir, torch.CPU, torch.ScalarType.Float32);
        var tokenizer = Trainer.LoadTokenizer(TinyFixture.VisionModelDir);
        var processor = Anneal.Training.Vision.ImageProcessorConfig.Load(TinyFixture.VisionModelDir);
        var (examples, _) = Anneal.Training.Data.VisionSftData.Load(path, "data", tokenizer, model.Config, processor, 128, false);
        Assert.Equal(2, examples.Count);
        Assert.NotEqual(examples[0].TrainedTokens, examples[1].TrainedTokens);
        var tokenMean = VisionTrainer.Evaluate(model, examples, model.Config, processor, torch.CPU);
        var exampleMean = examples.Average(e => VisionTrainer.Evaluate(model, [e], model.Config, processor, torch.CPU));
        output.WriteLine($"step loss {loss}, token mean {tokenMean}, mean of example means {exampleMean}");
        Assert.Equal(tokenMean, loss, 3);
        Assert.True(Math.Abs(exampleMean - tokenMean) > 1e-3, "the two means coincide: the test would show nothing");
    }

    [Fact]
    public void A_smaller_max_pixels_gives_fewer_image_tokens_and_is_kept_with_the_result()
    {
        var data = SquareSet();
        var settings = new TrainingSettings { TotalSteps = 1, LearningRate = 1e-3, SequenceLength = 128 };
        var (exit, events, err) = TinyFixture.Run(Spec(data, settings, "default"));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        Assert.Equal(4 * 16, Prepared(events)["image_tokens"]!.GetValue<long>());
        Assert.Equal(TinyVisionModel.MaxPixels, Prepared(events)["max_pixels"]!.GetValue<long>());

        var smaller = settings with { Vision = new VisionSettings(MinPixels: 1024, MaxPixels: 64 * 64, MaxImagesPerMessage: 1) };
        (exit, events, err) = TinyFixture.Run(Spec(data, smaller, "smaller"));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var prepared = Prepared(events);
        output.WriteLine(prepared.ToJsonString());
        Assert.Equal(4 * 4, prepared["image_tokens"]!.GetValue<long>());               // 64×64 → 4×4 patches → 2×2 tokens
        Assert.Equal(1024, prepared["min_pixels"]!.GetValue<long>());
        Assert.Equal(64 * 64, prepared["max_pixels"]!.GetValue<long>());
        Assert.Equal(1, prepared["max_images_per_message"]!.GetValue<int>());
        var processor = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "smaller", "final", VisionModelFolder.PreprocessorConfigFile)))!;
        Assert.Equal(1024, processor["size"]!["shortest_edge"]!.GetValue<long>());
        Assert.Equal(64 * 64, processor["size"]!["longest_edge"]!.GetValue<long>());
    }

    [Fact]
    public void Max_pixels_below_the_models_min_pixels_is_a_config_error_naming_both()
    {
        var (exit, events, _) = TinyFixture.Run(Spec(SquareSet(), new TrainingSettings { TotalSteps = 1, Vision = new VisionSettings(MaxPixels: 2048) }));
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Contains("min_pixels 4096 (from", failed.Message);
        Assert.Contains("is larger than max_pixels 2048", failed.Message);
    }

    [Theory]
    [InlineData(TrainingModes.FullFinetune, VisionTrainingParts.None)]
    [InlineData(TrainingModes.FullFinetune, VisionTrainingParts.Merger)]
    [InlineData(TrainingModes.FullFinetune, VisionTrainingParts.Tower)]
    [InlineData(TrainingModes.Lora, VisionTrainingParts.Merger)]
    public void Train_vision_trains_exactly_the_parts_it_names(string mode, string part)
    {
        var settings = new TrainingSettings
        {
            Mode = mode, TotalSteps = 2, LearningRate = 1e-2, SequenceLength = 128, TrainVision = part, Seed = 5,
            Lora = new LoraSettings(4, 8, 0.0, ["q_proj", "v_proj"]),
        };
        var (exit, events, err) = TinyFixture.Run(Spec(SquareSet(), settings));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var loaded = Assert.Single(events, e => e.Data?["train_vision"] is not null).Data!;
        Assert.Equal(part, loaded["train_vision"]!.GetValue<string>());
        Assert.Equal(part == VisionTrainingParts.None, loaded["vision_trainable_parameters"]!.GetValue<long>() == 0);

        using var trained = VisionModelFolder.Load(Path.Combine(dir, "out", "final"), torch.CPU, torch.ScalarType.Float32);
        using var original = VisionModelFolder.Load(TinyFixture.VisionModelDir, torch.CPU, torch.ScalarType.Float32);
        var before = original.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var changed = trained.named_parameters().Where(p => !TestTensors.Same(before[p.name], p.parameter)).Select(p => p.name).ToHashSet();
        output.WriteLine(string.Join("\n", changed.Order()));
        bool Merger(string n) => n.StartsWith(Qwen3VLForConditionalGeneration.MergerPrefix) || n.StartsWith(Qwen3VLForConditionalGeneration.DeepstackMergerPrefix);
        var visual = before.Keys.Where(n => n.StartsWith(Qwen3VLForConditionalGeneration.VisualPrefix)).ToList();
        foreach (var name in visual)
        {
            var shouldTrain = part == VisionTrainingParts.Tower || (part == VisionTrainingParts.Merger && Merger(name));
            // Weights and biases of trained parts all receive gradient; frozen ones must be bit-identical.
            if (shouldTrain) Assert.True(changed.Contains(name), $"{name} did not train with train_vision {part}");
            else Assert.False(changed.Contains(name), $"{name} changed although train_vision is {part}");
        }
        Assert.Contains(changed, n => n.Contains("language_model.layers.0.self_attn.q_proj"));

        if (mode == TrainingModes.Lora)
        {
            // The mergers trained in full beside the adapters travel as PEFT's modules_to_save.
            var adapterDir = Path.Combine(dir, "out", "final", "adapter");
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapterDir, Lora.AdapterConfigFile)))!;
            Assert.Equal(["merger", "deepstack_merger_list"], config["modules_to_save"]!.AsArray().Select(n => n!.GetValue<string>()));
            var keys = SafetensorsFile.Open(Path.Combine(adapterDir, Lora.AdapterWeightsFile)).Entries.Keys.ToList();
            Assert.Contains("base_model.model.model.visual.merger.linear_fc1.weight", keys);
            Assert.DoesNotContain(keys, k => k.Contains("visual.blocks."));
        }
    }

    [Theory]
    [InlineData(TrainingModes.FullFinetune, VisionTrainingParts.None)]
    [InlineData(TrainingModes.Lora, VisionTrainingParts.Merger)]
    public void A_resumed_vision_run_continues_the_same_loss_curve(string mode, string part)
    {
        var data = SquareSet();
        var settings = new TrainingSettings
        {
            Mode = mode, TotalSteps = 4, PerDeviceBatch = 1, GradientAccumulationSteps = 2, LearningRate = 5e-3, WarmupRatio = 0.25,
            LrScheduler = "cosine", WeightDecay = 0.01, SaveSteps = 2, Seed = 7, SequenceLength = 128, TrainVision = part,
            Lora = new LoraSettings(4, 8, 0.0),
        };
        var (exit, events, err) = TinyFixture.Run(Spec(data, settings, "straight"));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var full = TinyFixture.Losses(events);
        Assert.Equal([2, 4], events.Where(e => e.Type == EventTypes.CheckpointSaved).Select(e => e.Data!["step"]!.GetValue<int>()));

        var checkpoint = Path.Combine(dir, "straight", "checkpoints", "step-2");
        Assert.True(File.Exists(Path.Combine(checkpoint, TrainingCheckpoint.OptimizerFile)));
        Assert.True(File.Exists(Path.Combine(checkpoint, mode == TrainingModes.Lora ? Lora.AdapterWeightsFile : ModelFolder.WeightsFile)));
        Assert.True(File.Exists(Path.Combine(checkpoint, VisionModelFolder.PreprocessorConfigFile)));
        (exit, events, err) = TinyFixture.Run(Spec(data, settings, "resumed", resumeFrom: checkpoint));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var resumed = TinyFixture.Losses(events);
        output.WriteLine($"{string.Join(" ", full)}\n{string.Join(" ", resumed)}");
        Assert.Equal([3, 4], events.Where(e => e.Type == EventTypes.Progress).Select(e => e.Data!["step"]!.GetValue<int>()));
        for (var i = 0; i < 2; i++) Assert.Equal(full[2 + i], resumed[i], 1e-6);
    }

    [Fact]
    public void A_resume_with_another_accumulation_is_a_config_error()
    {
        var data = SquareSet();
        var settings = new TrainingSettings { TotalSteps = 1, GradientAccumulationSteps = 2, SaveSteps = 1, LearningRate = 1e-3, SequenceLength = 128 };
        Assert.Equal(0, TinyFixture.Run(Spec(data, settings)).Exit);
        var (exit, events, _) = TinyFixture.Run(Spec(data, settings with { GradientAccumulationSteps = 1, TotalSteps = 2 }, "again",
            resumeFrom: Path.Combine(dir, "out", "checkpoints", "step-1")));
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        Assert.Contains("the checkpoint was trained with gradient_accumulation_steps 2", events[^1].Message);
    }

    [Fact]
    public async Task Checkpoint_and_stop_saves_the_step_it_stops_at()
    {
        var settings = new TrainingSettings { TotalSteps = 40, LearningRate = 1e-3, SequenceLength = 128 };   // no save_steps
        using var stop = new CancellationTokenSource();
        var stdout = new StopAfterStep(2, stop);
        var exit = await TrainerProcess.RunAsync(Spec(SquareSet(), settings), stdout, new StringWriter(), CancellationToken.None,
            new TrainerOptions { CheckpointAndStop = stop.Token });
        Assert.Equal(TrainerProcess.ExitCancelled, exit);
        var events = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => System.Text.Json.JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
        var saved = Assert.Single(events, e => e.Type == EventTypes.CheckpointSaved);
        Assert.Equal(2, saved.Data!["step"]!.GetValue<int>());
        Assert.Equal(EventTypes.Cancelled, events[^1].Type);
        Assert.Equal(2, TrainingCheckpoint.ReadState(Path.Combine(dir, "out", "checkpoints", "step-2")).Step);
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "final")));
    }

    [Fact]
    public void The_validation_file_is_evaluated_every_eval_steps_and_its_loss_kept_with_checkpoints()
    {
        var data = SquareSet();
        var settings = new TrainingSettings
        {
            TotalSteps = 4, LearningRate = 3e-3, SequenceLength = 128, SaveSteps = 2,
            Validation = new ValidationSettings(Enabled: true, EvaluationStrategy: "steps", EvalSteps: 2),
        };
        var (exit, events, err) = TinyFixture.Run(Spec(data, settings, validation: data));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var evaluated = events.Where(e => e.Type == EventTypes.ValidationSummary).ToList();
        Assert.Equal([2, 4], evaluated.Select(e => e.Data!["step"]!.GetValue<int>()));
        Assert.True(evaluated[1].Data!["val_loss"]!.GetValue<double>() < evaluated[0].Data!["val_loss"]!.GetValue<double>(), "val.loss did not fall on the training data");
        var saved = events.Where(e => e.Type == EventTypes.CheckpointSaved).ToList();
        Assert.All(saved, e => Assert.NotNull(e.Data!["metrics"]![MetricNames.ValLoss]));
    }

    [Fact]
    public void Save_best_model_at_end_restores_the_best_evaluated_weights()
    {
        // A learning rate high enough that the last steps overshoot: the best val.loss comes earlier.
        var data = SquareSet();
        var settings = new TrainingSettings
        {
            TotalSteps = 6, LearningRate = 0.3, LrScheduler = "constant", MaxGradNorm = 0, SequenceLength = 128, Seed = 4,
            Validation = new ValidationSettings(Enabled: true, EvaluationStrategy: "steps", EvalSteps: 1, SaveBestModelAtEnd: true),
        };
        var (exit, events, err) = TinyFixture.Run(Spec(data, settings, validation: data));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var val = events.Where(e => e.Type == EventTypes.ValidationSummary).Select(e => e.Data!["val_loss"]!.GetValue<double>()).ToList();
        output.WriteLine(string.Join(" ", val));
        var best = val.IndexOf(val.Min()) + 1;
        var restored = events.Where(e => e.Type == EventTypes.BestModelRestored).ToList();
        Assert.True(best < 6, $"the last step was the best ({string.Join(", ", val)}): nothing to restore, the test would show nothing");
        Assert.Equal(best, Assert.Single(restored).Data!["step"]!.GetValue<int>());
        // The result's val.loss is the best one, recomputed from the saved folder.
        using var model = VisionModelFolder.Load(Path.Combine(dir, "out", "final"), torch.CPU, torch.ScalarType.Float32);
        var tokenizer = Trainer.LoadTokenizer(TinyFixture.VisionModelDir);
        var processor = Anneal.Training.Vision.ImageProcessorConfig.Load(TinyFixture.VisionModelDir);
        var (examples, _) = Anneal.Training.Data.VisionSftData.Load(data, "data", tokenizer, model.Config, processor, 128, false);
        Assert.Equal(val.Min(), VisionTrainer.Evaluate(model, examples, model.Config, processor, torch.CPU), 1e-4);
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "best")));
    }

    [Fact]
    public void Activation_checkpointing_on_gives_the_same_losses()
    {
        var data = SquareSet();
        var settings = new TrainingSettings { TotalSteps = 3, GradientAccumulationSteps = 2, LearningRate = 3e-3, SequenceLength = 128, Seed = 9, TrainVision = VisionTrainingParts.Merger };
        List<double> Losses(string mode, string outName)
        {
            var (exit, events, err) = TinyFixture.Run(Spec(data, settings with { ActivationCheckpointing = mode }, outName));
            Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
            Assert.Equal(mode == "on", Assert.Single(events, e => e.Data?["activation_checkpointing"] is not null).Data!["activation_checkpointing"]!.GetValue<bool>());
            return TinyFixture.Losses(events);
        }
        var plain = Losses("off", "plain");
        var recomputed = Losses("on", "recomputed");
        output.WriteLine($"{string.Join(" ", plain)}\n{string.Join(" ", recomputed)}");
        for (var i = 0; i < plain.Count; i++) Assert.Equal(plain[i], recomputed[i], 1e-5);
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
}
