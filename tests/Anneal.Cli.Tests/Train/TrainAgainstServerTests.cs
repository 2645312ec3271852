// `anneal train` against a real server (Kestrel on loopback, SQLite in a temp folder) with no
// trainer attached: jobs are created and started but stay queued. Covers config and dataset
// errors (nothing uploaded), key and backend problems, --no-poll re-runs, --examples, --dry-run
// and .env layering.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Train;

public class TrainAgainstServerTests
{
    static async Task<(CliSandbox Box, TestServer Server)> SetUpAsync(int records = 6)
    {
        var server = await TestServer.StartAsync();
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("configs/train.toml", Samples.SpecToml);
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(records));
        return (box, server);
    }

    static readonly string[] SpecCommand = ["train", "--type", "sft", "--config", "configs/train.toml", "--dataset", "ft_data/crafter_sft.jsonl"];

    [Fact]
    public async Task The_spec_command_with_no_poll_uploads_creates_and_starts_a_job()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--no-poll"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: queued", result.Out);
        var jobId = result.Out.Split('\n').Single(l => l.StartsWith("job_id: ")).Trim()["job_id: ".Length..];

        using var client = server.Client();
        var job = await client.GetJobAsync(jobId, default);
        Assert.Equal(Samples.TinyModel, job.Model);
        Assert.Equal("sft_offline", job.TrainingType);
        Assert.Equal(2, job.Hyperparameters["n_epochs"]!.GetValue<double>());
        Assert.Equal(64, job.Hyperparameters["gradient_accumulation_steps"]!.GetValue<int>());
        Assert.Equal("H100", job.Metadata!["effective_config"]!["compute"]!["gpu_type"]!.GetValue<string>());
        var file = await client.GetFileAsync(job.TrainingFileId, default);
        Assert.Equal(FileStatus.Ready, file.Status);
        Assert.Equal(6, file.NumExamples);
    }

    [Fact]
    public async Task Re_running_with_no_poll_reports_the_same_job_without_a_second_upload_or_job()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        string[] args = [.. SpecCommand, "--model", Samples.TinyModel, "--no-poll"];
        var first = await box.RunAsync(args);
        Assert.True(first.ExitCode == 0, first.ToString());
        var second = await box.RunAsync(args);
        Assert.True(second.ExitCode == 0, second.ToString());

        Assert.Contains("already submitted as job", second.Err);
        Assert.DoesNotContain("Uploading", second.Err);
        var firstId = first.Out.Split('\n').First(l => l.StartsWith("job_id:"));
        Assert.Contains(firstId, second.Out);
        Assert.Equal(1, await server.FileCountAsync());
        Assert.Equal(1, await server.JobCountAsync());
        Assert.True(File.Exists(Path.Combine(box.Dir, ".anneal", "submissions.json")));

        // A different config payload (another model) is a new submission; the same bytes are not stored twice.
        var third = await box.RunAsync([.. SpecCommand, "--model", "Qwen/Qwen3-0.6B", "--no-poll"]);
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Equal(1, await server.FileCountAsync());
        Assert.Equal(2, await server.JobCountAsync());
    }

    [Fact]
    public async Task Re_running_from_another_folder_is_recognised_by_the_server_and_starts_no_second_job()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        using var other = new CliSandbox();
        foreach (var (k, v) in box.Environment) other.Environment[k] = v;
        other.Write("elsewhere/train.toml", Samples.SpecToml);
        other.Write("elsewhere/data.jsonl", Samples.Dataset(6));

        var first = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--no-poll"]);
        Assert.True(first.ExitCode == 0, first.ToString());
        // Another folder, no local record of the first run: the server knows the dataset and config.
        var second = await other.RunAsync("train", "--type", "sft", "--config", "elsewhere/train.toml", "--dataset", "elsewhere/data.jsonl",
            "--model", Samples.TinyModel, "--no-poll");
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains("already submitted as job", second.Err);
        Assert.Contains(first.Out.Split('\n').First(l => l.StartsWith("job_id:")), second.Out);
        Assert.Equal(1, await server.JobCountAsync());
        Assert.Equal(1, await server.FileCountAsync());

        // Once that job is cancelled, a re-run is a new job.
        using var client = server.Client();
        var jobId = first.Out.Split('\n').First(l => l.StartsWith("job_id:"))["job_id:".Length..].Trim();
        await client.CancelJobAsync(jobId, default);
        var third = await other.RunAsync("train", "--type", "sft", "--config", "elsewhere/train.toml", "--dataset", "elsewhere/data.jsonl",
            "--model", Samples.TinyModel, "--no-poll");
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Contains($"previous job {jobId} cancelled", third.Err);
        Assert.Equal(2, await server.JobCountAsync());
    }

    [Fact]
    public async Task A_validation_set_is_validated_uploaded_and_named_in_the_job()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Write("val.jsonl", "{\"messages\": []}\n");
        var bad = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--validation", "val.jsonl", "--no-poll"]);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("val.jsonl is invalid", bad.Err);
        Assert.Contains("Line 1:", bad.Err);
        Assert.Equal(0, await server.FileCountAsync());

        box.Write("val.jsonl", Samples.Dataset(2));
        var good = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--validation", "val.jsonl", "--no-poll", "--json"]);
        Assert.True(good.ExitCode == 0, good.ToString());
        var job = JsonNode.Parse(good.Out)!;
        using var client = server.Client();
        var file = await client.GetFileAsync(job["validation_file_id"]!.GetValue<string>(), default);
        Assert.Equal(2, file.NumExamples);
        Assert.Equal(2, await server.FileCountAsync());
    }

    [Fact]
    public async Task Examples_uploads_only_the_first_n_records()
    {
        var (box, server) = await SetUpAsync(records: 10);
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--examples", "3", "--no-poll", "--json"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var job = JsonNode.Parse(result.Out)!;
        using var client = server.Client();
        var file = await client.GetFileAsync(job["training_file_id"]!.GetValue<string>(), default);
        Assert.Equal(3, file.NumExamples);
        Assert.Equal("crafter_sft.first3.jsonl", file.Filename);
    }

    [Fact]
    public async Task A_bad_toml_exits_2_naming_file_and_key_and_uploads_nothing()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Write("configs/train.toml", Samples.SpecToml.Replace("n_epochs = 2", "n_epochs = 2\nlearning_rat = 1e-5"));
        var result = await box.RunAsync(SpecCommand);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(Path.Combine(box.Dir, "configs", "train.toml"), result.Err);
        Assert.Contains("learning_rat", result.Err);
        Assert.Contains("learning_rate", result.Err); // did-you-mean
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_toml_syntax_error_exits_2_with_the_line()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Write("configs/train.toml", "[job]\nmodel = \"Qwen/Qwen3-4B\"\ndata = \n");
        var result = await box.RunAsync(SpecCommand);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("train.toml:3", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_bad_dataset_exits_2_with_line_numbers_and_uploads_nothing()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var lines = Enumerable.Range(0, 60).Select(i => i % 2 == 1
            ? """{"messages":[{"role":"user","content":"only one message"}]}"""
            : Samples.Record(i));
        box.Write("ft_data/crafter_sft.jsonl", string.Join("\n", lines) + "\n{not json\n");
        var result = await box.RunAsync(SpecCommand);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("nothing was uploaded", result.Err);
        Assert.Contains("Line 2: messages: needs at least 2 messages", result.Err);
        Assert.Contains("Line 40:", result.Err);
        Assert.DoesNotContain("Line 42:", result.Err); // only the first 20 are shown ...
        Assert.Contains("31 errors in total, first 20 shown", result.Err); // ... of 30 one-message records + 1 bad JSON line
        Assert.Equal(0, await server.FileCountAsync());
        Assert.Equal(0, await server.JobCountAsync());
    }

    [Fact]
    public async Task A_missing_dataset_names_both_places_looked_in()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync("train", "--type", "sft", "--config", "configs/train.toml", "--dataset", "missing.jsonl");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(Path.Combine(box.Dir, "missing.jsonl"), result.Err);
        Assert.Contains(Path.Combine(box.Dir, "configs", "missing.jsonl"), result.Err);
    }

    [Fact]
    public async Task The_dataset_defaults_to_job_data_resolved_next_to_the_config()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        // [job].data = "ft_data/crafter_sft.jsonl" exists under configs/ only, not in the working directory.
        Directory.Move(Path.Combine(box.Dir, "ft_data"), Path.Combine(box.Dir, "configs", "ft_data"));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "configs/train.toml", "--model", Samples.TinyModel, "--no-poll");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(1, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_missing_key_exits_2_telling_to_run_setup()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Environment.Remove("SYNTH_API_KEY");
        var result = await box.RunAsync(SpecCommand);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("SYNTH_API_KEY is not set", result.Err);
        Assert.Contains("anneal setup", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_wrong_key_exits_2_saying_the_server_rejected_it()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Environment["SYNTH_API_KEY"] = "ank_not_a_real_key";
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("rejected the API key (401", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task An_unreachable_backend_exits_1_naming_the_url()
    {
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = "ank_whatever";
        box.Write("configs/train.toml", Samples.SpecToml);
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(3));
        var result = await box.RunAsync([.. SpecCommand, "--backend", "http://127.0.0.1:9"]);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("cannot reach the Anneal backend at http://127.0.0.1:9/api", result.Err);
    }

    [Fact]
    public async Task A_backend_url_with_a_wrong_path_exits_2_saying_there_is_no_anneal_api()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--backend", server.BaseUrl + "/wrong"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"no Anneal API at {server.BaseUrl}/wrong/api (GET {server.BaseUrl}/wrong/api/health failed)", result.Err);
        Assert.Equal(0, await server.FileCountAsync());
    }

    [Fact]
    public async Task A_backend_that_is_not_a_url_exits_2()
    {
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = "ank_whatever";
        box.Write("configs/train.toml", Samples.SpecToml);
        box.Write("ft_data/crafter_sft.jsonl", Samples.Dataset(3));
        var result = await box.RunAsync([.. SpecCommand, "--backend", "localhost:8000"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("is not an absolute http:// or https:// URL", result.Err);
    }

    [Fact]
    public async Task Dry_run_prints_the_payload_and_sends_nothing()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--examples", "2", "--dry-run"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var plan = JsonNode.Parse(result.Out)!;
        Assert.Contains("\"<id of the uploaded file sha256:", result.Out); // readable, not \u003C
        Assert.Equal(server.BaseUrl + "/api", plan["backend"]!.GetValue<string>());
        Assert.Equal(2, plan["uploads"]![0]!["num_examples"]!.GetValue<int>());
        var job = plan["create_job"]!;
        Assert.Equal(Samples.TinyModel, job["model"]!.GetValue<string>());
        Assert.Equal("sft_offline", job["training_type"]!.GetValue<string>());
        Assert.Equal(8e-6, job["hyperparameters"]!["learning_rate"]!.GetValue<double>());
        Assert.NotNull(job["metadata"]!["effective_config"]);
        Assert.Equal(0, await server.FileCountAsync());
        Assert.Equal(0, await server.JobCountAsync());
        Assert.False(Directory.Exists(Path.Combine(box.Dir, ".anneal")));

        // No network at all: a backend that does not exist, and no key, still give the payload.
        box.Environment.Remove("SYNTH_API_KEY");
        var offline = await box.RunAsync([.. SpecCommand, "--dry-run", "--backend", "http://127.0.0.1:9"]);
        Assert.True(offline.ExitCode == 0, offline.ToString());
    }

    [Fact]
    public async Task Env_files_layer_over_dotenv_and_the_process_environment_wins()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Environment.Clear();
        box.Write(".env", $"SYNTH_API_KEY=ank_wrong\nBACKEND_BASE_URL=http://127.0.0.1:9\n");
        box.Write("secrets/prod.env", $"SYNTH_API_KEY={server.ApiKey}\n");
        box.Write("secrets/url.env", $"BACKEND_BASE_URL={server.BaseUrl}\n");
        string[] args = [.. SpecCommand, "--no-poll"];

        var onlyDotenv = await box.RunAsync(args);
        Assert.Equal(1, onlyDotenv.ExitCode); // .env's backend does not exist
        Assert.Contains("http://127.0.0.1:9/api", onlyDotenv.Err);

        var layered = await box.RunAsync([.. args, "--env-file", "secrets/prod.env", "--env-file", "secrets/url.env", "--model", Samples.TinyModel]);
        Assert.True(layered.ExitCode == 0, layered.ToString());

        box.Environment["SYNTH_API_KEY"] = "ank_from_process";
        var processWins = await box.RunAsync([.. args, "--env-file", "secrets/prod.env", "--env-file", "secrets/url.env", "--model", "Qwen/Qwen3-0.6B"]);
        Assert.Equal(2, processWins.ExitCode);
        Assert.Contains("rejected the API key", processWins.Err);
        Assert.Equal(1, await server.JobCountAsync());
    }

    [Fact]
    public async Task A_model_the_server_does_not_know_is_reported_by_name()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync([.. SpecCommand, "--model", "Qwen/Qwen9-1B", "--no-poll"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Qwen/Qwen9-1B", result.Err);
        Assert.Equal(0, await server.JobCountAsync());
        Assert.Equal(0, await server.FileCountAsync()); // checked before the upload
    }

    [Fact]
    public async Task Poll_timeout_exits_3_and_says_the_job_continues()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        // No trainer is attached, so the job stays queued until the timeout.
        var result = await box.RunAsync([.. SpecCommand, "--model", Samples.TinyModel, "--poll-timeout", "1", "--poll-interval", "0.2"]);
        Assert.Equal(3, result.ExitCode);
        Assert.Contains("timed out after 1 s", result.Err);
        Assert.Contains("sft.created", result.Out);
    }
}

public class TrainInterruptionTests
{
    [Fact]
    public async Task Ctrl_c_while_following_stops_following_exits_130_and_leaves_the_job()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(3));
        var output = new StringWriter();
        var error = new StringWriter();
        var ctx = CliContext.Captured(output, error, box.Dir,
            new Dictionary<string, string> { ["SYNTH_API_KEY"] = server.ApiKey, ["BACKEND_BASE_URL"] = server.BaseUrl });
        using var cts = new CancellationTokenSource();
        var run = AnnealApp.RunAsync(["train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.2"], ctx, cts.Token);
        while (!output.ToString().Contains("sft.queued")) await Task.Delay(50);
        cts.Cancel(); // what Ctrl+C / SIGTERM does in AnnealApp.MainAsync
        Assert.Equal(130, await run);
        Assert.Contains("it continues on the server", error.ToString());
        using var client = server.Client();
        Assert.Equal(JobStatus.Queued, (await client.ListJobsAsync(null, 10, default)).Jobs.Single().Status);
    }

    [Fact]
    public async Task With_json_stdout_holds_only_the_final_job()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(3));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--json", "--poll-timeout", "0.5", "--poll-interval", "0.2");
        Assert.Equal(3, result.ExitCode);
        Assert.Contains("sft.queued", result.Err);
        Assert.DoesNotContain("sft.queued", result.Out);
        Assert.Equal("queued", JsonNode.Parse(result.Out)!["status"]!.GetValue<string>());
    }
}
