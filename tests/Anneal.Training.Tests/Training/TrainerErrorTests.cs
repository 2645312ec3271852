// Bad input to the trainer process: every case ends with one sft.failed event whose error code and
// message tell the user what to fix, and the documented exit code; cancellation stops at a step
// boundary with sft.cancelled and exit 130.
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class TrainerErrorTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-err-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static readonly TrainingSettings Quick = new() { TotalSteps = 2, PerDeviceBatch = 2, LearningRate = 1e-3 };

    static TrainerEvent AssertFailed(int exit, List<TrainerEvent> events, int expectedExit, string code, params string[] mentions)
    {
        Assert.Equal(expectedExit, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Same(failed, events[^1]);
        Assert.Equal("error", failed.Level);
        Assert.Equal(code, failed.Data!["error"]!["code"]!.GetValue<string>());
        foreach (var m in mentions) Assert.Contains(m, failed.Message);
        Assert.DoesNotContain(events, e => e.Type == EventTypes.Completed);
        return failed;
    }

    [Fact]
    public void Qlora_checks_its_lora_settings_like_lora()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick with { Mode = TrainingModes.Qlora, Lora = new LoraSettings(R: 0) }));
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "training.lora.r 0 must be at least 1");
        var (exit2, events2, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "b"), data, Quick with { Mode = TrainingModes.Qlora, Lora = new LoraSettings(TargetModules: ["q_proj", "lm_head"]) }));
        AssertFailed(exit2, events2, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "training.lora.target_modules: lm_head not in a Qwen3 layer");
    }

    [Fact]
    public void Sequence_length_above_the_model_limit_names_both_numbers()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick with { SequenceLength = 4096 }));
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "sequence_length 4096", "max_position_embeddings 2048");
    }

    [Fact]
    public void Incomplete_model_folder_names_the_missing_file()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var model = Path.Combine(dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(TinyFixture.ModelDir)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));

        File.Delete(Path.Combine(model, "model.safetensors"));
        var spec = TinyFixture.Spec(dir, data, Quick, modelPath: model) with { Model = "Qwen/Qwen3-0.6B" };
        var (exit, events, _) = TinyFixture.Run(spec);
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, model, "model.safetensors");

        File.Delete(Path.Combine(model, "tokenizer.json"));
        (exit, events, _) = TinyFixture.Run(spec);
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "tokenizer.json is missing");

        File.Delete(Path.Combine(model, "config.json"));
        (exit, events, _) = TinyFixture.Run(spec);
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "config.json is missing");
    }

    [Fact]
    public void A_model_too_large_for_memory_is_reported_as_out_of_memory()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var model = Path.Combine(dir, "huge");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(TinyFixture.ModelDir)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        // 2^31 × 2^20 fp32 embeddings (8 PiB, beyond the address space): the allocation fails at
        // once even where the kernel overcommits memory.
        var configPath = Path.Combine(model, "config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!;
        config["vocab_size"] = int.MaxValue;
        config["hidden_size"] = 1 << 20;
        File.WriteAllText(configPath, config.ToJsonString());
        var spec = TinyFixture.Spec(dir, data, Quick, modelPath: model) with { Model = "Qwen/Qwen3-0.6B" };
        var (exit, events, _) = TinyFixture.Run(spec);
        // The memory model refuses it before any allocation, saying what would fit.
        AssertFailed(exit, events, TrainerProcess.ExitFailed, ErrorCodes.OutOfMemory, "does not fit", "per_device_batch 2", "would fit");
    }

    [Fact]
    public void A_diverging_run_stops_with_advice_on_the_learning_rate()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = Quick with { TotalSteps = 6, LearningRate = 1e30, MaxGradNorm = 0 };
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings));
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserConfigError, "diverged", "lower learning_rate");
    }

    [Fact]
    public void Invalid_dataset_is_a_data_error_with_the_line()
    {
        var data = Path.Combine(dir, "bad.jsonl");
        File.WriteAllLines(data,
        [
            """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}""",
            """{"messages": [{"role": "user", "content": "no answer"}]}""",
        ]);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick));
        AssertFailed(exit, events, TrainerProcess.ExitUserError, ErrorCodes.UserDataError, data, "Line 2");

        var (exit2, events2, _) = TinyFixture.Run(TinyFixture.Spec(dir, Path.Combine(dir, "missing.jsonl"), Quick));
        AssertFailed(exit2, events2, TrainerProcess.ExitUserError, ErrorCodes.UserDataError, "missing.jsonl", "does not exist");
    }

    [Fact]
    public async Task Unreadable_spec_file_is_a_config_error()
    {
        var spec = Path.Combine(dir, "spec.json");
        File.WriteAllText(spec, "{ not json");
        var stdout = new StringWriter();
        var exit = await TrainerProcess.RunAsync(spec, stdout, new StringWriter(), default);
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        Assert.Contains(ErrorCodes.UserConfigError, stdout.ToString());
        Assert.Contains("spec.json", stdout.ToString());
    }

    [Fact]
    public async Task Cancellation_stops_at_a_step_boundary()
    {
        var data = TinyFixture.WriteChatSet(dir);
        using var cts = new CancellationTokenSource();
        var stdout = new CancelOnProgress(cts);
        var exit = await TrainerProcess.RunAsync(TinyFixture.Spec(dir, data, Quick with { TotalSteps = 50 }), stdout, new StringWriter(), cts.Token, null);
        Assert.Equal(TrainerProcess.ExitCancelled, exit);
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(EventTypes.Cancelled, lines[^1]);
        Assert.Equal(1, lines.Count(l => l.Contains(EventTypes.Progress)));
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "final")));
    }

    [Fact]
    public async Task Generate_reports_missing_models_and_adapters_without_a_local_base()
    {
        var err = new StringWriter();
        var exit = await TrainerProcess.GenerateAsync(Path.Combine(dir, "nope"), "hi", 5, new StringWriter(), err, default);
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        Assert.Contains("nope does not exist", err.ToString());

        // A LoRA run writes an adapter for "anneal/tiny-qwen3", an id rather than a folder.
        var data = TinyFixture.WriteChatSet(dir);
        var (code, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick with { Mode = TrainingModes.Lora, TotalSteps = 1 }));
        Assert.Equal(0, code);
        var final = events.Single(e => e.Type == EventTypes.Completed).Data!["final_path"]!.GetValue<string>();
        err = new StringWriter();
        Assert.Equal(TrainerProcess.ExitUserError, await TrainerProcess.GenerateAsync(final, "hi", 5, new StringWriter(), err, default));
        Assert.Contains("final/merged", err.ToString());

        // Pointed at a local base folder, the adapter loads and generates.
        var configPath = Path.Combine(final, "adapter_config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!;
        config["base_model_name_or_path"] = TinyFixture.ModelDir;
        File.WriteAllText(configPath, config.ToJsonString());
        err = new StringWriter();
        Assert.Equal(0, await TrainerProcess.GenerateAsync(final, "hi", 5, new StringWriter(), err, default));
    }

    /// <summary>Cancels the token when the first progress event is written.</summary>
    sealed class CancelOnProgress(CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value != null && value.Contains(EventTypes.Progress)) cts.Cancel();
        }
    }
}
