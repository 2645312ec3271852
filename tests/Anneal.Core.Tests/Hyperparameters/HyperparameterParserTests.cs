using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Hyperparameters;

public class HyperparameterParserTests
{
    static (TrainingSettings? Settings, IReadOnlyList<ErrorItem> Errors) Parse(string json) =>
        HyperparameterParser.Parse(JsonNode.Parse(json)!.AsObject());

    static ErrorItem SingleError(string json)
    {
        var (settings, errors) = Parse(json);
        Assert.Null(settings);
        return Assert.Single(errors);
    }

    [Fact]
    public void The_spec_hyperparameters_parse_with_their_values()
    {
        var (s, errors) = Parse("""
            {"n_epochs": 2, "per_device_batch": 2, "gradient_accumulation_steps": 64, "learning_rate": 8e-6,
             "warmup_ratio": 0.03, "training_mode": "full_finetune", "use_qlora": false}
            """);
        Assert.Empty(errors);
        Assert.NotNull(s);
        Assert.Equal(2.0, s.NEpochs);
        Assert.Null(s.TotalSteps);
        Assert.Equal(2, s.PerDeviceBatch);
        Assert.Equal(64, s.GradientAccumulationSteps);
        Assert.Equal(8e-6, s.LearningRate);
        Assert.Equal(0.03, s.WarmupRatio);
        Assert.Equal(TrainingModes.FullFinetune, s.Mode);
    }

    [Fact]
    public void Every_key_is_read_into_settings()
    {
        var (s, errors) = Parse("""
            {"total_steps": 30, "per_device_batch": 4, "per_device_eval_batch": 8, "gradient_accumulation_steps": 2,
             "sequence_length": 512, "learning_rate": 0.001, "warmup_ratio": 0.1, "weight_decay": 0.01,
             "lr_scheduler": "cosine", "max_grad_norm": 0.5, "seed": 7, "save_steps": 10,
             "activation_checkpointing": "on", "training_mode": "lora",
             "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
             "validation": {"enabled": true, "evaluation_strategy": "steps", "eval_steps": 5,
                            "save_best_model_at_end": true, "metric_for_best_model": "eval_loss", "greater_is_better": false},
             "parallelism": {"tensor_parallel": 1, "zero_stage": "2", "fsdp": false}}
            """);
        Assert.Empty(errors);
        Assert.NotNull(s);
        Assert.Equal(30, s.TotalSteps);
        Assert.Equal(8, s.PerDeviceEvalBatch);
        Assert.Equal(512, s.SequenceLength);
        Assert.Equal(0.01, s.WeightDecay);
        Assert.Equal("cosine", s.LrScheduler);
        Assert.Equal(0.5, s.MaxGradNorm);
        Assert.Equal(7, s.Seed);
        Assert.Equal(10, s.SaveSteps);
        Assert.Equal("on", s.ActivationCheckpointing);
        Assert.Equal(TrainingModes.Lora, s.Mode);
        Assert.Equal(new LoraSettings(8, 16, 0.05, ["q_proj", "v_proj"]).Targets, s.Lora.Targets);
        Assert.Equal(8, s.Lora.R);
        Assert.Equal(16, s.Lora.Alpha);
        Assert.Equal(0.05, s.Lora.Dropout);
        Assert.True(s.Validation.Enabled);
        Assert.Equal(5, s.Validation.EvalSteps);
        Assert.True(s.Validation.SaveBestModelAtEnd);
        Assert.Equal("val.loss", s.Validation.MetricForBestModel);
    }

    [Theory]
    [InlineData("train_steps")]
    [InlineData("steps")]
    public void Step_aliases_map_to_total_steps(string key)
    {
        var (s, errors) = Parse($$"""{"{{key}}": 12}""");
        Assert.Empty(errors);
        Assert.Equal(12, s!.TotalSteps);
    }

    [Fact]
    public void Conflicting_step_aliases_are_rejected()
    {
        var e = SingleError("""{"total_steps": 12, "steps": 20}""");
        Assert.Equal("hyperparameters.steps", e.Field);
        Assert.Contains("conflicts with total_steps = 12", e.Message);
    }

    [Fact]
    public void Missing_hyperparameters_object_is_an_error()
    {
        var (s, errors) = HyperparameterParser.Parse(null);
        Assert.Null(s);
        Assert.Contains("n_epochs", Assert.Single(errors).Message);
    }

    [Fact]
    public void Neither_epochs_nor_steps_is_an_error()
    {
        var e = SingleError("""{"learning_rate": 1e-5}""");
        Assert.Equal("hyperparameters", e.Field);
        Assert.Contains("at least one of n_epochs or total_steps", e.Message);
    }

    [Fact]
    public void A_string_where_an_integer_is_expected_names_key_value_and_range()
    {
        var e = SingleError("""{"n_epochs": 1, "per_device_batch": "2"}""");
        Assert.Equal("hyperparameters.per_device_batch", e.Field);
        Assert.Equal("must be an integer between 1 and 4096, got the string \"2\"", e.Message);
    }

    [Fact]
    public void A_fraction_where_an_integer_is_expected_is_rejected()
    {
        var e = SingleError("""{"total_steps": 2.5}""");
        Assert.Equal("hyperparameters.total_steps", e.Field);
        Assert.Contains("must be an integer", e.Message);
        Assert.Contains("got 2.5", e.Message);
    }

    [Theory]
    [InlineData("learning_rate", "-0.1", "must be a number > 0 and ≤ 1, got -0.1")]
    [InlineData("learning_rate", "0", "must be a number > 0 and ≤ 1, got 0")]
    [InlineData("warmup_ratio", "1.5", "must be a number ≥ 0 and ≤ 1, got 1.5")]
    [InlineData("weight_decay", "true", "must be a number ≥ 0 and ≤ 1, got true")]
    [InlineData("gradient_accumulation_steps", "0", "must be an integer between 1 and 65536, got 0")]
    [InlineData("sequence_length", "4", "must be an integer between 16 and 262144, got 4")]
    [InlineData("seed", "-1", "must be an integer between 0 and 2147483647, got -1")]
    [InlineData("max_grad_norm", "\"big\"", "must be a number ≥ 0 and ≤ 1000000, got the string \"big\"")]
    [InlineData("save_steps", "0", "must be an integer between 1 and 100000000, got 0")]
    [InlineData("per_device_eval_batch", "null", "must be an integer between 1 and 4096, got null")]
    [InlineData("use_qlora", "\"yes\"", "must be true or false, got the string \"yes\"")]
    [InlineData("packing", "\"true\"", "must be true or false, got the string \"true\"")]
    [InlineData("packing", "1", "must be true or false, got 1")]
    [InlineData("n_epochs", "0", "must be a number > 0 and ≤ 1000, got 0")]
    public void Out_of_range_and_wrong_type_values_are_named(string key, string value, string message)
    {
        var extra = key == "n_epochs" ? "" : "\"total_steps\": 3, ";
        var e = SingleError($$"""{ {{extra}} "{{key}}": {{value}} }""");
        Assert.Equal($"hyperparameters.{key}", e.Field);
        Assert.Equal(message, e.Message);
    }

    [Theory]
    [InlineData("lr_scheduler", "cosin", "must be one of \"linear\" | \"cosine\" | \"constant\", got \"cosin\"; did you mean 'cosine'?")]
    [InlineData("activation_checkpointing", "yes", "must be one of \"auto\" | \"on\" | \"off\", got \"yes\"")]
    [InlineData("training_mode", "full-finetune", "must be one of \"full_finetune\" | \"lora\" | \"qlora\", got \"full-finetune\"; did you mean 'full_finetune'?")]
    public void Unknown_choices_list_the_allowed_values(string key, string value, string message)
    {
        var e = SingleError($$"""{"n_epochs": 1, "{{key}}": "{{value}}"}""");
        Assert.Equal($"hyperparameters.{key}", e.Field);
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void Unknown_key_gets_did_you_mean()
    {
        var e = SingleError("""{"n_epochs": 1, "learnig_rate": 1e-5}""");
        Assert.Equal("hyperparameters.learnig_rate", e.Field);
        Assert.StartsWith("unknown key; did you mean 'learning_rate'?", e.Message);
    }

    [Fact]
    public void Packing_is_off_by_default_and_read_when_given()
    {
        Assert.False(Parse("""{"n_epochs": 1}""").Settings!.Packing);
        Assert.True(Parse("""{"n_epochs": 1, "packing": true}""").Settings!.Packing);
        Assert.False(Parse("""{"n_epochs": 1, "packing": false}""").Settings!.Packing);
    }

    [Fact]
    public void Misspelt_packing_gets_did_you_mean()
    {
        var e = SingleError("""{"n_epochs": 1, "packng": true}""");
        Assert.Equal("hyperparameters.packng", e.Field);
        Assert.StartsWith("unknown key; did you mean 'packing'?", e.Message);
    }

    [Fact]
    public void Lora_rank_at_top_level_is_rejected_not_dropped()
    {
        var e = SingleError("""{"n_epochs": 1, "lora_r": 8}""");
        Assert.Equal("hyperparameters.lora_r", e.Field);
        Assert.Contains("unknown key", e.Message);
    }

    [Fact]
    public void Qlora_is_accepted_here_and_use_qlora_selects_it()
    {
        Assert.Equal(TrainingModes.Qlora, Parse("""{"n_epochs": 1, "training_mode": "qlora"}""").Settings!.Mode);
        Assert.Equal(TrainingModes.Qlora, Parse("""{"n_epochs": 1, "use_qlora": true}""").Settings!.Mode);
    }

    [Fact]
    public void Use_qlora_turns_the_spec_default_mode_or_lora_into_qlora()
    {
        Assert.Equal(TrainingModes.Qlora, Parse("""{"n_epochs": 1, "training_mode": "full_finetune", "use_qlora": true}""").Settings!.Mode);
        Assert.Equal(TrainingModes.Qlora, Parse("""{"n_epochs": 1, "training_mode": "lora", "use_qlora": true}""").Settings!.Mode);
        Assert.Equal(TrainingModes.Lora, Parse("""{"n_epochs": 1, "training_mode": "lora", "use_qlora": false}""").Settings!.Mode);
    }

    [Fact]
    public void Global_batch_derives_accumulation_from_per_device_batch()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "global_batch": 32, "per_device_batch": 4}""");
        Assert.Empty(errors);
        Assert.Equal(8, s!.GradientAccumulationSteps);
        Assert.Equal(32, s.GlobalBatch);
    }

    [Fact]
    public void Global_batch_derives_per_device_batch_from_accumulation()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "global_batch": 32, "gradient_accumulation_steps": 16}""");
        Assert.Empty(errors);
        Assert.Equal(2, s!.PerDeviceBatch);
    }

    [Fact]
    public void Global_batch_not_a_multiple_is_rejected()
    {
        var e = SingleError("""{"n_epochs": 1, "global_batch": 10, "per_device_batch": 4}""");
        Assert.Equal("hyperparameters.global_batch", e.Field);
        Assert.Equal("10 is not a multiple of per_device_batch 4", e.Message);
    }

    [Fact]
    public void Global_batch_disagreeing_with_batch_and_accumulation_is_rejected()
    {
        var e = SingleError("""{"n_epochs": 1, "global_batch": 64, "per_device_batch": 2, "gradient_accumulation_steps": 8}""");
        Assert.Equal("hyperparameters.global_batch", e.Field);
        Assert.Contains("does not equal per_device_batch 2 × gradient_accumulation_steps 8 = 16", e.Message);
    }

    [Fact]
    public void Lora_keys_are_checked()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "lora": {"alpah": 8, "r": 0, "dropout": 1.0, "target_modules": ["q_proj", "qproj", 3]}}""");
        Assert.Null(s);
        var byField = errors.ToDictionary(e => e.Field!, e => e.Message);
        Assert.Contains("did you mean 'alpha'?", byField["hyperparameters.lora.alpah"]);
        Assert.Equal("must be an integer between 1 and 1024, got 0", byField["hyperparameters.lora.r"]);
        Assert.Equal("must be a number ≥ 0 and < 1, got 1.0", byField["hyperparameters.lora.dropout"]);
        Assert.Contains("did you mean 'q_proj'?", byField["hyperparameters.lora.target_modules[1]"]);
        Assert.Equal("must be a string, got 3", byField["hyperparameters.lora.target_modules[2]"]);
        Assert.Equal(5, errors.Count);
    }

    [Fact]
    public void Lora_all_linear_means_every_projection()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "lora": {"target_modules": "all-linear"}}""");
        Assert.Empty(errors);
        Assert.Equal(LoraSettings.AllLinear, s!.Lora.Targets);
    }

    [Fact]
    public void Lora_that_is_not_an_object_is_rejected()
    {
        var e = SingleError("""{"n_epochs": 1, "lora": 8}""");
        Assert.Equal("hyperparameters.lora", e.Field);
        Assert.Equal("must be an object (a table), got 8", e.Message);
    }

    [Fact]
    public void Validation_keys_are_checked()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "validation": {"enabled": "yes", "evaluation_strategy": "step", "eval_step": 3, "metric_for_best_model": "accuracy"}}""");
        Assert.Null(s);
        var byField = errors.ToDictionary(e => e.Field!, e => e.Message);
        Assert.Equal("must be true or false, got the string \"yes\"", byField["hyperparameters.validation.enabled"]);
        Assert.Contains("did you mean 'steps'?", byField["hyperparameters.validation.evaluation_strategy"]);
        Assert.Contains("did you mean 'eval_steps'?", byField["hyperparameters.validation.eval_step"]);
        Assert.Contains("\"val.loss\"", byField["hyperparameters.validation.metric_for_best_model"]);
        Assert.Equal(4, errors.Count);
    }

    [Fact]
    public void Parallelism_accepts_any_key_but_only_scalars()
    {
        var (s, errors) = Parse("""{"n_epochs": 1, "parallelism": {"anything": 1, "nested": {"a": 1}, "list": [1]}}""");
        Assert.Null(s);
        Assert.Equal(["hyperparameters.parallelism.nested", "hyperparameters.parallelism.list"], errors.Select(e => e.Field));
        Assert.Equal("must be a string, number or boolean, got an object", errors[0].Message);
    }

    [Fact]
    public void Values_built_in_code_are_read_like_parsed_ones()
    {
        var hp = new JsonObject { ["total_steps"] = 5, ["learning_rate"] = 0.002, ["per_device_batch"] = 3L };
        var (s, errors) = HyperparameterParser.Parse(hp);
        Assert.Empty(errors);
        Assert.Equal(5, s!.TotalSteps);
        Assert.Equal(0.002, s.LearningRate);
        Assert.Equal(3, s.PerDeviceBatch);
    }

    [Fact]
    public void Several_problems_are_all_reported()
    {
        var (s, errors) = Parse("""{"n_epochs": -1, "learning_rate": 5, "foo": 1}""");
        Assert.Null(s);
        Assert.Equal(3, errors.Count);
    }
}
