// `anneal train` checks the model and its settings before uploading anything (exit 2, the server
// holds no file): unknown and non-trainable models, sequence_length beyond the context; qlora passes.
// Against a real server (its GET /api/models), and with --dry-run against the built-in list.
using Anneal.Cli.Train;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Train;

public class ModelPreflightTests
{
    static readonly string[] SpecCommand = ["train", "--type", "sft", "--config", "configs/train.toml", "--dataset", "ft_data/crafter_sft.jsonl", "--no-poll"];

    static CliSandbox Sandbox(string toml)
    {
        var box = new CliSandbox();
        box.Write("configs/train.toml", toml);
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(4));
        return box;
    }

    public static TheoryData<string, string, string> Problems() => new()
    {
        { Samples.SpecToml.Replace("Qwen/Qwen3-4B", "Qwen/Qwen9-1B"), "", "[job].model (or --model): unknown model 'Qwen/Qwen9-1B'" },
        { Samples.SpecToml, "Qwen/Qwen3-30B-A3B", "'Qwen/Qwen3-30B-A3B' cannot be trained by this server: mixture-of-experts" },
        { Samples.SpecToml, "Qwen/Qwen3-VL-30B-A3B-Instruct", "'Qwen/Qwen3-VL-30B-A3B-Instruct' cannot be trained by this server: Qwen3-VL mixture-of-experts" },
        { Samples.TinyToml().Replace("sequence_length = 64", "sequence_length = 100000"), "", "[hyperparameters].sequence_length: sequence_length 100000 exceeds the context length 2048 of anneal/tiny-qwen3" },
    };

    [Theory]
    [MemberData(nameof(Problems))]
    public async Task A_job_the_server_would_refuse_exits_2_before_any_upload(string toml, string model, string message)
    {
        await using var server = await TestServer.StartAsync();
        using var box = Sandbox(toml);
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        var result = await box.RunAsync(model.Length > 0 ? [.. SpecCommand, "--model", model] : SpecCommand);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(message, result.Err);
        Assert.Contains("nothing was uploaded", result.Err);
        Assert.DoesNotContain("Uploading", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
        Assert.Equal(0, await server.JobCountAsync());
    }

    [Theory]
    [InlineData("use_qlora = false", "use_qlora = true")]
    [InlineData("mode = \"full_finetune\"", "mode = \"qlora\"")]
    public async Task The_spec_config_with_qlora_passes_the_checks(string from, string to)
    {
        using var box = Sandbox(Samples.SpecToml.Replace(from, to));
        var result = await box.RunAsync([.. SpecCommand[..^1], "--dry-run", "--backend", "http://127.0.0.1:9"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var job = System.Text.Json.Nodes.JsonNode.Parse(result.Out)!["create_job"]!;
        Assert.Equal("Qwen/Qwen3-4B", job["model"]!.GetValue<string>());
    }

    [Theory]
    [MemberData(nameof(Problems))]
    public async Task Dry_run_reports_the_same_problems_without_a_server(string toml, string model, string message)
    {
        using var box = Sandbox(toml);
        var result = await box.RunAsync([.. SpecCommand[..^1], "--dry-run", "--backend", "http://127.0.0.1:9", .. model.Length > 0 ? new[] { "--model", model } : []]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(message, result.Err);
        Assert.Contains("built-in model list", result.Err);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task An_unknown_fine_tuned_model_id_exits_2_before_any_upload()
    {
        await using var server = await TestServer.StartAsync();
        using var box = Sandbox(Samples.SpecToml);
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        var result = await box.RunAsync([.. SpecCommand, "--model", "ft:Qwen/Qwen3-4B:nope"]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("no fine-tuned model 'ft:Qwen/Qwen3-4B:nope' in your organisation", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_trainable_model_with_fitting_settings_passes()
    {
        await using var server = await TestServer.StartAsync();
        using var box = Sandbox(Samples.TinyToml().Replace("sequence_length = 64", "sequence_length = 2048"));
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        var result = await box.RunAsync(SpecCommand);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(1, await server.JobCountAsync());
    }

    [Theory]
    [InlineData("hyperparameters.training_mode", "[training].mode")]
    [InlineData("hyperparameters.use_qlora", "[training].use_qlora")]
    [InlineData("hyperparameters.lora.r", "[training.lora].r")]
    [InlineData("hyperparameters.lora.target_modules[1]", "[training.lora].target_modules[1]")]
    [InlineData("hyperparameters.validation.eval_steps", "[training.validation].eval_steps")]
    [InlineData("hyperparameters.parallelism.tp", "[hyperparameters.parallelism].tp")]
    [InlineData("hyperparameters.learning_rate", "[hyperparameters].learning_rate")]
    [InlineData("training_file_id", "training_file_id")]
    public void Api_fields_map_back_to_toml_keys(string field, string toml) =>
        Assert.Equal(toml, TomlKeys.FromApiField(field));

    [Fact]
    public void Server_messages_name_toml_keys()
    {
        var item = new ErrorItem(null, "hyperparameters.use_qlora", "true conflicts with training_mode \"lora\"; use training_mode \"qlora\" or use_qlora = false");
        Assert.Equal("[training].use_qlora: true conflicts with [training].mode = \"lora\"; use [training].mode = \"qlora\" or [training].use_qlora = false",
            TomlKeys.Describe(item));
    }
}
