// Error messages in the user's terms: no .NET type names, directories called directories, one
// clear line for a misspelt command or option, TOML keys for TOML files, where a rejected key came
// from, what is at a --backend address, and unknown ids as "no job ... in your organisation".
namespace Anneal.Cli.Tests.Commands;

public class MessagesTests
{
    [Fact]
    public async Task A_non_numeric_count_says_what_was_expected_without_a_type_name()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "x.toml", "--examples", "abc");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("error: --examples abc: expected a whole number", result.Err);
        Assert.DoesNotContain("System.", result.Err);
        var interval = await box.RunAsync("train", "--config", "x.toml", "--poll-interval", "soon");
        Assert.Contains("--poll-interval soon: expected a number", interval.Err);
    }

    [Fact]
    public async Task A_misspelt_command_gets_one_suggestion_and_no_missing_command_line()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("trian");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("error: unknown command 'trian'; did you mean 'train'?", result.Err);
        Assert.DoesNotContain("Required command", result.Out + result.Err);
    }

    [Fact]
    public async Task A_misspelt_option_is_named_once_and_its_value_is_not_a_second_error()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "x.toml", "--datset", "good3.jsonl");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("error: unknown option '--datset'; did you mean '--dataset'?", result.Err);
        Assert.DoesNotContain("good3.jsonl", result.Err);
    }

    [Fact]
    public async Task A_directory_given_as_config_or_dataset_is_called_a_directory()
    {
        using var box = new CliSandbox();
        Directory.CreateDirectory(Path.Combine(box.Dir, "configs"));
        Directory.CreateDirectory(Path.Combine(box.Dir, "data"));
        var config = await box.RunAsync("train", "--config", "configs");
        Assert.Equal(2, config.ExitCode);
        Assert.Contains($"--config configs: {Path.Combine(box.Dir, "configs")} is a directory; expected a TOML file", config.Err);

        box.Write("train.toml", Samples.TinyToml());
        var dataset = await box.RunAsync("train", "--config", "train.toml", "--dataset", "data");
        Assert.Equal(2, dataset.ExitCode);
        Assert.Contains($"--dataset data: {Path.Combine(box.Dir, "data")} is a directory; expected a JSONL file", dataset.Err);
        var absolute = await box.RunAsync("train", "--config", "train.toml", "--dataset", Path.Combine(box.Dir, "data"));
        Assert.Contains("is a directory; expected a JSONL file", absolute.Err);
        var check = await box.RunAsync("files", "check", "data");
        Assert.Equal(2, check.ExitCode);
        Assert.Contains("is a directory", check.Err);
    }

    [Fact]
    public async Task An_unknown_hyperparameter_lists_the_toml_keys()
    {
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml().Replace("learning_rate = 1e-3", "learning_rat = 1e-3"));
        box.Write("data.jsonl", Samples.Dataset(2));
        var result = await box.RunAsync("train", "--config", "train.toml", "--dry-run");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("hyperparameters.learning_rat: unknown key; did you mean 'learning_rate'?", result.Err);
        Assert.Contains("allowed in [hyperparameters]: n_epochs,", result.Err);
        Assert.Contains("[hyperparameters.parallelism]", result.Err);
        Assert.DoesNotContain("training_mode", result.Err);
        Assert.Contains("[training] holds mode, use_qlora", result.Err);
    }

    [Fact]
    public async Task A_rejected_key_from_an_env_file_names_that_file()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        var envFile = box.Write("secrets/prod.env", $"SYNTH_API_KEY=ank_wrong\nBACKEND_BASE_URL={server.BaseUrl}\n");
        var result = await box.RunAsync("jobs", "list", "--env-file", "secrets/prod.env");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("rejected the API key (401", result.Err);
        Assert.Contains($"Check SYNTH_API_KEY in {envFile}", result.Err);
    }

    [Fact]
    public async Task A_backend_address_without_the_anneal_api_says_so()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        var result = await box.RunAsync("jobs", "list", "--backend", server.BaseUrl + "/foo");
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains($"no Anneal API at {server.BaseUrl}/foo/api (GET {server.BaseUrl}/foo/api/health failed)", result.Err);

        var notUrl = await box.RunAsync("jobs", "list", "--backend", "notaurl");
        Assert.Equal(2, notUrl.ExitCode);
        Assert.Contains("backend URL 'notaurl' is not an absolute", notUrl.Err);
    }

    [Fact]
    public async Task An_unknown_job_or_file_id_exits_2_saying_it_is_not_in_the_organisation()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        var job = await box.RunAsync("jobs", "get", "job_nope");
        Assert.Equal(2, job.ExitCode);
        Assert.Contains("no job job_nope in your organisation", job.Err);
        var events = await box.RunAsync("jobs", "events", "job_nope");
        Assert.Equal(2, events.ExitCode);
        Assert.Contains("no job job_nope in your organisation", events.Err);
        var file = await box.RunAsync("files", "get", "file_nope");
        Assert.Equal(2, file.ExitCode);
        Assert.Contains("no file file_nope in your organisation", file.Err);
    }

    const string ImageRecord = """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x.example/cat.png"}},{"type":"text","text":"What is this?"}]},{"role":"assistant","content":"A cat."}]}""";

    [Fact]
    public async Task Images_without_a_model_are_accepted_with_a_note_naming_a_vision_model()
    {
        using var box = new CliSandbox();
        box.Write("mm.jsonl", ImageRecord + "\n" + ImageRecord + "\n");
        var result = await box.RunAsync("files", "check", "mm.jsonl");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("OK: 2 examples", result.Out);
        Assert.Contains("images need a vision model (e.g. --model Qwen/Qwen3-VL-8B-Instruct)", result.Err);
        Assert.DoesNotContain("text-only", result.Err);

        var vision = await box.RunAsync("files", "check", "mm.jsonl", "--model", "Qwen/Qwen3-VL-8B-Instruct");
        Assert.True(vision.ExitCode == 0, vision.ToString());
        Assert.DoesNotContain("note:", vision.Err);

        // A model known to be text-only still rejects them, naming the model.
        var text = await box.RunAsync("files", "check", "mm.jsonl", "--model", "Qwen/Qwen3-4B");
        Assert.Equal(2, text.ExitCode);
        Assert.Contains("vision model", text.Err);
    }
}
