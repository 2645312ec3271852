// JobSettings.Normalize: every upstream spelling of SettingKeys means the same as ours, two
// spellings that disagree are an error naming both, and keys without effect are warned about.
using System.Text.Json.Nodes;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Hyperparameters;

public class JobSettingsTests
{
    static (JobSettings? Settings, IReadOnlyList<Anneal.Core.Contracts.ErrorItem> Errors) Normalize(string hp, string? metadata = null, string? validationFileId = null) =>
        JobSettings.Normalize(JsonNode.Parse(hp)!.AsObject(), metadata is null ? null : JsonNode.Parse(metadata)!.AsObject(), validationFileId);

    static JobSettings Ok(string hp, string? metadata = null, string? validationFileId = null)
    {
        var (s, errors) = Normalize(hp, metadata, validationFileId);
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        return s!;
    }

    // Upstream spelling (a JSON fragment of hyperparameters, or of metadata.effective_config) → what it sets.
    public static TheoryData<string, string?, Func<JobSettings, object?>, object?> Spellings => new()
    {
        { """{"n_epochs":1,"batch_size":3}""", null, s => s.Training.PerDeviceBatch, 3 },
        { """{"n_epochs":1,"train_kind":"peft"}""", null, s => s.Training.Mode, TrainingModes.Lora },
        { """{"n_epochs":1,"train_kind":"fft"}""", null, s => s.Training.Mode, TrainingModes.FullFinetune },
        { """{"n_epochs":1,"train_kind":"sft"}""", null, s => s.Training.Mode, TrainingModes.FullFinetune },
        { """{"n_epochs":1,"lora_rank":4,"train_kind":"peft"}""", null, s => s.Training.Lora.R, 4 },
        { """{"n_epochs":1,"lora_alpha":7}""", null, s => s.Training.Lora.Alpha, 7.0 },
        { """{"n_epochs":1,"lora_dropout":0.1}""", null, s => s.Training.Lora.Dropout, 0.1 },
        { """{"n_epochs":1,"lora_target_modules":["q_proj"]}""", null, s => string.Join(",", s.Training.Lora.Targets), "q_proj" },
        { """{"n_epochs":1,"evaluation_strategy":"epoch"}""", null, s => s.Training.Validation.EvaluationStrategy, "epoch" },
        { """{"n_epochs":1,"eval_steps":7}""", null, s => s.Training.Validation.EvalSteps, 7 },
        { """{"n_epochs":1,"eval_steps":0}""", null, s => s.Training.Validation.EvalSteps, null },
        { """{"n_epochs":1,"save_best_model_at_end":true}""", null, s => s.Training.Validation.SaveBestModelAtEnd, true },
        { """{"n_epochs":1,"load_best_model_at_end":true}""", null, s => s.Training.Validation.SaveBestModelAtEnd, true },
        { """{"n_epochs":1,"metric_for_best_model":"eval_loss"}""", null, s => s.Training.Validation.MetricForBestModel, "val.loss" },
        { """{"n_epochs":1,"greater_is_better":true}""", null, s => s.Training.Validation.GreaterIsBetter, true },
        { """{"n_epochs":1,"parallelism":{"activation_checkpointing":true}}""", null, s => s.Training.ActivationCheckpointing, "on" },
        { """{"n_epochs":1}""", """{"effective_config":{"training":{"mode":"lora"}}}""", s => s.Training.Mode, TrainingModes.Lora },
        { """{"n_epochs":1}""", """{"effective_config":{"training":{"mode":"sft_offline"}}}""", s => s.Training.Mode, TrainingModes.FullFinetune },
        { """{"n_epochs":1}""", """{"effective_config":{"training":{"mode":"lora","use_qlora":true}}}""", s => s.Training.Mode, TrainingModes.Qlora },
        { """{"n_epochs":1}""", """{"effective_config":{"data":{"validation_files":["file_v"]}}}""", s => s.ValidationFileId, "file_v" },
        { """{"n_epochs":1}""", """{"effective_config":{"data":{"validation_files":["file_v"]}}}""", s => s.Training.Validation.Enabled, true },
        { """{"n_epochs":1}""", """{"effective_config":{"data":{"validation_files":["file_v"]},"training":{"validation":{"enabled":false}}}}""", s => s.Training.Validation.Enabled, false },
        { """{"n_epochs":1}""", """{"effective_config":{"compute":{"gpu_type":"H100","gpu_count":2}}}""", s => s.Compute?.ToJsonString(), """{"gpu_type":"H100","gpu_count":2}""" },
    };

    [Theory]
    [MemberData(nameof(Spellings))]
    public void An_upstream_spelling_means_the_same_as_ours(string hp, string? metadata, Func<JobSettings, object?> read, object? expected) =>
        Assert.Equal(expected, read(Ok(hp, metadata)));

    public static TheoryData<string, string?, string, string> Conflicts => new()
    {
        { """{"n_epochs":1,"batch_size":2,"per_device_batch":4}""", null, "hyperparameters.batch_size", "conflicts with hyperparameters.per_device_batch = 4" },
        { """{"n_epochs":1,"training_mode":"full_finetune"}""", """{"effective_config":{"training":{"mode":"lora"}}}""",
          "metadata.effective_config.training.mode", "conflicts with hyperparameters.training_mode = \"full_finetune\"" },
        { """{"n_epochs":1,"lora":{"r":8},"lora_rank":16}""", null, "hyperparameters.lora_rank", "conflicts with hyperparameters.lora.r = 8" },
        { """{"n_epochs":1,"train_kind":"peft"}""", """{"effective_config":{"training":{"mode":"full_finetune"}}}""",
          "hyperparameters.train_kind", "conflicts with metadata.effective_config.training.mode = \"full_finetune\"" },
        { """{"n_epochs":1,"validation":{"eval_steps":5},"eval_steps":10}""", null, "hyperparameters.eval_steps", "conflicts with hyperparameters.validation.eval_steps = 5" },
    };

    [Theory]
    [MemberData(nameof(Conflicts))]
    public void Two_spellings_that_disagree_are_one_error_naming_both(string hp, string? metadata, string field, string message)
    {
        var (s, errors) = Normalize(hp, metadata);
        Assert.Null(s);
        var e = Assert.Single(errors);
        Assert.Equal(field, e.Field);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void The_validation_file_id_and_validation_files_must_name_the_same_file()
    {
        var (_, errors) = Normalize("""{"n_epochs":1}""", """{"effective_config":{"data":{"validation_files":["file_b"]}}}""", "file_a");
        var e = Assert.Single(errors);
        Assert.Equal("metadata.effective_config.data.validation_files[0]", e.Field);
        Assert.Contains("conflicts with validation_file_id = \"file_a\"", e.Message);
    }

    [Fact]
    public void Errors_in_an_upstream_spelling_name_that_spelling()
    {
        var (_, errors) = Normalize("""{"n_epochs":1,"lora_rank":0,"batch_size":"two"}""");
        Assert.Equal(["hyperparameters.batch_size", "hyperparameters.lora_rank"], errors.Select(e => e.Field).Order());
    }

    [Fact]
    public void Keys_without_effect_are_named_in_warnings()
    {
        var s = Ok("""{"n_epochs":1,"world_size":4,"parallelism":{"fsdp":true,"tensor_parallel_size":2}}""",
            """{"effective_config":{"data":{"topology":{"container_count":4}}}}""");
        Assert.Equal(["hyperparameters.parallelism.fsdp", "hyperparameters.parallelism.tensor_parallel_size", "hyperparameters.world_size",
            "metadata.effective_config.data.topology.container_count"], s.Warnings.Select(w => w.Field).Order());
        Assert.Contains("one device", s.Warnings.Single(w => w.Field == "hyperparameters.world_size").Message);
    }

    [Fact]
    public void Validation_settings_without_a_validation_file_are_warned_about_and_off()
    {
        var s = Ok("""{"n_epochs":1,"validation":{"eval_steps":5}}""");
        Assert.False(s.Training.Validation.Enabled);
        Assert.Contains("no validation file", Assert.Single(s.Warnings).Message);
        Assert.Empty(Ok("""{"n_epochs":1,"validation":{"enabled":false}}""").Warnings);
        Assert.True(Ok("""{"n_epochs":1}""", validationFileId: "file_v").Training.Validation.Enabled);
    }

    [Fact]
    public void Every_upstream_spelling_in_the_table_is_exercised_here()
    {
        var covered = Spellings.Select(row => (string)row[0] + (string?)row[1]).ToList();
        foreach (var spelling in SettingKeys.All.SelectMany(k => k.Spellings))
        {
            var last = spelling.Path.Split('.')[^1].Split('[')[0];
            Assert.True(covered.Any(c => c.Contains($"\"{last}\"")), $"no case for {spelling.Path}");
        }
    }

    [Fact]
    public void Packing_is_read_as_batching_with_a_warning_that_names_the_new_key()
    {
        var packed = Ok("""{"n_epochs":1,"packing":true}""");
        Assert.Equal(BatchingModes.Packed, BatchingModes.Of(packed.Training));
        var warning = Assert.Single(packed.Warnings);
        Assert.Equal("hyperparameters.packing", warning.Field);
        Assert.Contains("batching = \"packed\"", warning.Message);
        Assert.Contains("write batching instead", warning.Message);
        Assert.Empty(Ok("""{"n_epochs":1,"batching":"packed"}""").Warnings);
        var (_, errors) = Normalize("""{"n_epochs":1,"packing":true,"batching":"padded"}""");
        Assert.Equal("hyperparameters.packing", Assert.Single(errors).Field);
    }
}
