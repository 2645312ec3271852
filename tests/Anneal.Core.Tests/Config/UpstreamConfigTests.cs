// Upstream's SFT example configs (their key sets, tests/fixtures/upstream-configs) load here: every
// key is understood, or accepted with a warning naming it where it has no effect.
using Anneal.Core.Config;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Config;

public class UpstreamConfigTests
{
    public sealed record Expected(string Mode, int PerDeviceBatch, int Accumulation, bool ValidationEnabled, string[] WarningKeys);

    public static TheoryData<string, Expected> Cases => new()
    {
        { "crafter_fft.toml", new(TrainingModes.FullFinetune, 2, 2, false,
            ["hyperparameters.world_size", "hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.deepspeed_stage",
             "hyperparameters.parallelism.fsdp", "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16", "data.topology.container_count"]) },
        { "crafter_fft_4b.toml", new(TrainingModes.FullFinetune, 1, 4, false, []) },
        { "coder_lora_4b.toml", new(TrainingModes.Qlora, 2, 2, false,
            ["hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.deepspeed_stage", "hyperparameters.parallelism.fsdp",
             "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16", "training.validation"]) },
        { "coder_lora_small.toml", new(TrainingModes.Qlora, 2, 2, false,
            ["hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.deepspeed_stage", "hyperparameters.parallelism.fsdp",
             "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16", "training.validation"]) },
        { "coder_lora_30b.toml", new(TrainingModes.Qlora, 1, 4, false,
            ["algorithm.variety", "hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.deepspeed_stage", "hyperparameters.parallelism.fsdp",
             "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16", "training.validation"]) },
        { "crafter_vlm_sft_example.toml", new(TrainingModes.Qlora, 1, 4, false,
            ["hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.deepspeed_stage", "hyperparameters.parallelism.fsdp",
             "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16", "hyperparameters.parallelism.evaluation_strategy",
             "hyperparameters.parallelism.eval_steps", "hyperparameters.parallelism.save_best_model_at_end", "hyperparameters.parallelism.metric_for_best_model",
             "hyperparameters.parallelism.greater_is_better", "hyperparameters.parallelism.load_best_model_at_end"]) },
        { "sft_qwen3_vl_2b_test.toml", new(TrainingModes.Lora, 1, 2, false,
            ["model_config.max_model_len", "model_config.supports_vision", "hyperparameters.parallelism.use_deepspeed", "hyperparameters.parallelism.fsdp",
             "hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fp16"]) },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Each_upstream_example_loads_and_names_every_key_without_effect(string name, Expected expected)
    {
        var (config, errors) = TrainingConfigLoader.Load(RepoPaths.Of("tests", "fixtures", "upstream-configs", name));
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        var s = config!.Settings.Training;
        Assert.Equal(expected.Mode, s.Mode);
        Assert.Equal(expected.PerDeviceBatch, s.PerDeviceBatch);
        Assert.Equal(expected.Accumulation, s.GradientAccumulationSteps);
        Assert.Equal(expected.ValidationEnabled, s.Validation.Enabled);
        Assert.Equal(expected.WarningKeys.Order(), config.Warnings.Select(w => w.Key).Order());
        Assert.All(config.Warnings, w => Assert.True(w.Line is > 0, $"{w} has no line"));
    }

    [Fact]
    public void Upstream_lora_spellings_mean_ours()
    {
        var vlm = TrainingConfigLoader.Load(RepoPaths.Of("tests", "fixtures", "upstream-configs", "crafter_vlm_sft_example.toml")).Config!.Settings.Training;
        Assert.Equal((8, 16.0, 0.05), (vlm.Lora.R, vlm.Lora.Alpha, vlm.Lora.Dropout));
        Assert.Null(vlm.Lora.TargetModules); // ["all-linear"]
        Assert.Equal("on", vlm.ActivationCheckpointing); // parallelism.activation_checkpointing = true is honoured

        var coder = TrainingConfigLoader.Load(RepoPaths.Of("tests", "fixtures", "upstream-configs", "coder_lora_4b.toml")).Config!.Settings.Training;
        Assert.Equal((8, 16.0), (coder.Lora.R, coder.Lora.Alpha)); // top-level [lora]
        Assert.Equal(4, coder.Validation.EvalSteps);
        Assert.True(coder.Validation.SaveBestModelAtEnd);

        var vl = TrainingConfigLoader.Load(RepoPaths.Of("tests", "fixtures", "upstream-configs", "sft_qwen3_vl_2b_test.toml")).Config!;
        Assert.Equal("off", vl.Settings.Training.ActivationCheckpointing);
        Assert.Equal(1, vl.MaxImagesPerMessage);
    }

    [Fact]
    public void A_module_qwen3_does_not_have_is_named_in_the_error()
    {
        var text = File.ReadAllText(RepoPaths.Of("tests", "fixtures", "upstream-configs", "sft_qwen3_vl_2b_test.toml"))
            .Replace("\"down_proj\"]", "\"down_proj\", \"mm_projector\"]");
        var (config, errors) = TrainingConfigLoader.Parse(text, "vl.toml");
        Assert.Null(config);
        var e = Assert.Single(errors);
        Assert.Equal("hyperparameters.lora_target_modules[7]", e.Key);
        Assert.Contains("\"mm_projector\" is not a Qwen3 linear layer", e.Message);
    }

    [Fact]
    public void Two_spellings_of_one_setting_must_agree()
    {
        var (_, errors) = TrainingConfigLoader.Parse("""
            [job]
            model = "anneal/tiny-qwen3"
            [hyperparameters]
            n_epochs = 1
            batch_size = 2
            per_device_batch = 4
            """, "c.toml");
        var e = Assert.Single(errors);
        Assert.Equal("hyperparameters.batch_size", e.Key);
        Assert.Equal(5, e.Line);
        Assert.Contains("conflicts with hyperparameters.per_device_batch = 4", e.Message);
    }

    [Fact]
    public void A_typo_of_an_upstream_key_still_gets_did_you_mean()
    {
        var (_, errors) = TrainingConfigLoader.Parse("""
            [job]
            model = "anneal/tiny-qwen3"
            [hyperparameters]
            n_epochs = 1
            world_sise = 2
            """, "c.toml");
        var e = Assert.Single(errors);
        Assert.Equal("hyperparameters.world_sise", e.Key);
        Assert.Contains("did you mean 'world_size'?", e.Message);
    }
}
