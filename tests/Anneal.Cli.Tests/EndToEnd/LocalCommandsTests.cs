// Commands that run the trainer code in-process or as a child: train-local, generate, tokenize,
// trainer run, serve (as a real child process stopped with SIGTERM) and the demo.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Cli;

namespace Anneal.Cli.Tests.EndToEnd;

[Collection("trainer")]
public class LocalCommandsTests
{
    [Fact]
    public async Task Train_local_then_generate_and_tokenize_with_the_result()
    {
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml(steps: 2));
        box.Write("data.jsonl", Samples.Dataset(4));
        // The tiny model's folder is generated at --model when missing.
        var train = await box.RunAsync("train-local", "--model", "tiny", "--dataset", "data.jsonl", "--config", "train.toml", "--output", "out", "--device", "cpu");
        Assert.True(train.ExitCode == 0, train.ToString());
        var events = train.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Contains(events, e => e["type"]!.GetValue<string>() == "sft.completed");
        var final = Path.Combine(box.Dir, "out", "final");
        Assert.True(File.Exists(Path.Combine(final, "model.safetensors")));
        Assert.Equal("float32", JsonNode.Parse(File.ReadAllText(Path.Combine(final, "config.json")))!["dtype"]!.GetValue<string>());

        var generate = await box.RunAsync("generate", "--model", "out/final", "--prompt", "What is 1 plus 1?", "--max-new-tokens", "4");
        Assert.True(generate.ExitCode == 0, generate.ToString());

        var output = new StringWriter();
        var error = new StringWriter();
        var ctx = CliContext.Captured(output, error, box.Dir, input: new StringReader("hello world"));
        var code = await AnnealApp.RunAsync(["tokenize", "--model", "out/final"], ctx);
        Assert.True(code == 0, error.ToString());
        Assert.NotNull(JsonNode.Parse(output.ToString()));
    }

    [Fact]
    public async Task A_train_local_lora_adapter_names_the_folder_it_was_trained_on_as_its_base()
    {
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml(steps: 1).Replace("mode = \"full_finetune\"", "mode = \"lora\""));
        box.Write("data.jsonl", Samples.Dataset(2));
        var train = await box.RunAsync("train-local", "--model", "models/tiny", "--dataset", "data.jsonl", "--config", "train.toml", "--output", "out", "--device", "cpu");
        Assert.True(train.ExitCode == 0, train.ToString());
        var adapter = JsonNode.Parse(File.ReadAllText(Path.Combine(box.Dir, "out", "final", "adapter_config.json")))!;
        Assert.Equal(Path.Combine(box.Dir, "models", "tiny"), adapter["base_model_name_or_path"]!.GetValue<string>());
    }

    [Fact]
    public async Task Local_commands_name_missing_inputs()
    {
        using var box = new CliSandbox();
        var generate = await box.RunAsync("generate", "--model", "nope", "--prompt", "hi");
        Assert.Equal(2, generate.ExitCode);
        Assert.Contains("--model", generate.Err);
        Assert.Contains("folder not found", generate.Err);

        var trainer = await box.RunAsync("trainer", "run", "--spec", "missing/spec.json");
        Assert.Equal(2, trainer.ExitCode);
        Assert.Contains("spec.json: file not found", trainer.Err);

        box.Write("train.toml", Samples.TinyToml());
        var local = await box.RunAsync("train-local", "--model", "tiny", "--dataset", "none.jsonl", "--config", "train.toml", "--output", "out");
        Assert.Equal(2, local.ExitCode);
        Assert.Contains("none.jsonl: file not found", local.Err);

        var device = await box.RunAsync("train-local", "--model", "tiny", "--dataset", "d", "--config", "train.toml", "--output", "out", "--device", "tpu");
        Assert.Equal(2, device.ExitCode);
        Assert.Contains("tpu", device.Err);
    }

    [Fact]
    public async Task Serve_runs_until_sigterm_and_prints_the_first_key()
    {
        using var box = new CliSandbox();
        var self = CliContext.SelfCommandOfThisProcess();
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(["serve", "--urls", "http://127.0.0.1:0", "--data-dir", Path.Combine(box.Dir, "data"), .. TestStore.ServeOptions(Path.Combine(box.Dir, "data"))]))
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string? url = null, key = null;
        while (await process.StandardOutput.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("Anneal is listening on ")) url = line.Split(' ')[4];
            if (line.StartsWith("Created the first API key: ")) key = line["Created the first API key: ".Length..];
            if (line.StartsWith("Press Ctrl+C")) break;
        }
        if (url is null || key is null) Assert.Fail("serve did not start: " + await stderr);

        box.Environment["SYNTH_API_KEY"] = key!;
        var jobs = await box.RunAsync("jobs", "list", "--backend", url!);
        Assert.True(jobs.ExitCode == 0, jobs.ToString());

        using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString()])) await kill.WaitForExitAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        Assert.Equal(0, process.ExitCode);
    }

    [Fact]
    public async Task Serve_rejects_bad_options()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("serve", "--max-concurrent-jobs", "0");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--max-concurrent-jobs 0", result.Err);
        var lease = await box.RunAsync("serve", "--lease-seconds", "0.5");
        Assert.Equal(2, lease.ExitCode);
        Assert.Contains("--lease-seconds 0.5: expected at least 1", lease.Err);
        var urls = await box.RunAsync("serve", "--urls", "127.0.0.1:8000");
        Assert.Equal(2, urls.ExitCode);
        Assert.Contains("--urls 127.0.0.1:8000", urls.Err);
        var gpus = await box.RunAsync("serve", "--gpus", "0,x");
        Assert.Equal(2, gpus.ExitCode);
        Assert.Contains("--gpus: 'x' is not a GPU index", gpus.Err);
        var format = await box.RunAsync("serve", "--log-format", "xml");
        Assert.Equal(2, format.ExitCode);
        Assert.Contains("--log-format xml: expected text or json", format.Err);
        var level = await box.RunAsync("serve", "--log-level", "loud");
        Assert.Equal(2, level.ExitCode);
        Assert.Contains("--log-level loud: expected one of debug, information, warning, error", level.Err);
    }

    [Fact]
    public async Task Serve_writes_its_log_as_one_json_object_per_line_when_asked()
    {
        using var box = new CliSandbox();
        var self = CliContext.SelfCommandOfThisProcess();
        var psi = new System.Diagnostics.ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(["serve", "--urls", "http://127.0.0.1:0", "--data-dir", Path.Combine(box.Dir, "data"), "--offline",
                     "--log-format", "json", "--log-level", "information", .. TestStore.ServeOptions(Path.Combine(box.Dir, "data"))]))
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        var logs = new List<System.Text.Json.Nodes.JsonObject>();
        string? url = null;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            // The logger writes from its own thread: its lines may come before or after the server's own.
            while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
            {
                if (line.StartsWith('{')) logs.Add(System.Text.Json.Nodes.JsonNode.Parse(line)!.AsObject());   // every log line is one JSON object
                if (line.StartsWith("Anneal is listening on ")) url = line.Split(' ')[4];
                if (url is not null && logs.Any(l => (string?)l["Message"] == $"Now listening on: {url}")) break;
            }
        }
        finally { process.Kill(); }
        Assert.NotNull(url);
        var listening = Assert.Single(logs, l => (string?)l["Message"] == $"Now listening on: {url}");
        Assert.Equal("Information", (string?)listening["LogLevel"]);
        Assert.Equal("Microsoft.Hosting.Lifetime", (string?)listening["Category"]);
        Assert.Equal(url, (string?)listening["State"]!["address"]);   // the message's named values, for a log collector
        Assert.EndsWith("Z", (string?)listening["Timestamp"]);
    }

    [Fact]
    public async Task Demo_runs_the_whole_loop_and_answers_with_the_fine_tuned_model()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("demo", "--data-dir", "demo-data", "--steps", "3", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains("sft.progress step 3/3", result.Out);
        Assert.Contains("Answer:", result.Out);
        Assert.Contains("fine_tuned_model: fft:anneal/tiny-qwen3:", result.Out);
        Assert.Contains("model folder: ", result.Out); // kept, so worth naming
        // Where the curve can be watched live, and the key to sign in with.
        Assert.Matches(@"web console at http://127\.0\.0\.1:\d+/ \(sign in with the key ank_\S+\)", result.Out);
        Assert.Matches(@"Watch it in the console: http://127\.0\.0\.1:\d+/#/jobs/job_\w+", result.Out);
        // A folder the user named is kept.
        Assert.True(Directory.Exists(Path.Combine(box.Dir, "demo-data", "jobs")));
    }

    [Fact]
    public async Task Demo_vision_fine_tunes_the_tiny_vl_model_and_answers_about_a_picture()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("demo", "--vision", "--data-dir", "demo-data", "--steps", "1", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("Training anneal/tiny-qwen3-vl (full fine-tune, 1 steps):", result.Out);
        Assert.Contains("note: packed 4 local image files into the upload", result.Err);
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains("sft.progress step 1/1", result.Out);
        Assert.Contains("fine_tuned_model: fft:anneal/tiny-qwen3-vl:", result.Out);
        // `anneal generate --image` on the job's final folder, asked about one of the demo's pictures.
        var picture = Path.Combine(box.Dir, "demo-data", "demo", "blue.png");
        Assert.Contains($"Asking the fine-tuned model about {picture}: \"What colour is the picture?\"", result.Out);
        Assert.NotNull(Anneal.Core.Vision.ImageDecoder.Sniff(File.ReadAllBytes(picture)));
        var answer = result.Out.Split('\n').Single(l => l.StartsWith("Answer:", StringComparison.Ordinal))["Answer:".Length..].Trim();
        Assert.NotEmpty(answer);   // one step teaches the tiny model nothing reliable; VisionTrainingTests checks the words
        Assert.Contains("(the dataset's answer: \"The picture is blue.\")", result.Out);
        var final = Path.Combine(box.Dir, "demo-data", "jobs");
        Assert.Single(Directory.GetDirectories(final), d => File.Exists(Path.Combine(d, "output", "final", "preprocessor_config.json")));
    }

    [Fact]
    public async Task Demo_in_a_temporary_folder_does_not_print_a_folder_it_removes()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("demo", "--steps", "2", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("model folder:", result.Out);
        Assert.Contains("run `anneal demo --keep` to keep them", result.Out);
        var answer = result.Out.Split('\n').Single(l => l.StartsWith("Answer:"));
        Assert.DoesNotContain("<think>", answer);
    }

    [Fact]
    public async Task Demo_help_gives_its_own_data_dir_default()
    {
        using var box = new CliSandbox();
        var help = await box.RunAsync("demo", "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("default: a new temporary folder", help.Out);
        Assert.DoesNotContain("~/.anneal", help.Out);
    }

    [Fact]
    public async Task Generate_from_a_lora_jobs_final_folder_uses_final_merged_or_names_it()
    {
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml(steps: 1).Replace("mode = \"full_finetune\"", "mode = \"lora\""));
        box.Write("data.jsonl", Samples.Dataset(2));
        var train = await box.RunAsync("train-local", "--model", "tiny", "--dataset", "data.jsonl", "--config", "train.toml", "--output", "out", "--device", "cpu");
        Assert.True(train.ExitCode == 0, train.ToString());
        var final = Path.Combine(box.Dir, "out", "final");
        var adapterConfig = Path.Combine(final, "adapter_config.json");
        Assert.True(File.Exists(adapterConfig));
        // As a server job writes it: the base is a registry id, not a folder on this machine.
        var config = JsonNode.Parse(File.ReadAllText(adapterConfig))!;
        config["base_model_name_or_path"] = Samples.TinyModel;
        File.WriteAllText(adapterConfig, config.ToJsonString());

        var noMerged = await box.RunAsync("generate", "--model", "out/final", "--prompt", "What is 1 plus 1?", "--max-new-tokens", "2");
        Assert.Equal(2, noMerged.ExitCode);
        Assert.Contains($"no merged model ({Path.Combine(final, "merged")} is missing)", noMerged.Err);

        // final/merged holds a full model folder (here the base itself stands in for the merge).
        Directory.CreateDirectory(Path.Combine(final, "merged"));
        foreach (var f in Directory.GetFiles(Path.Combine(box.Dir, "tiny")))
            File.Copy(f, Path.Combine(final, "merged", Path.GetFileName(f)));
        var merged = await box.RunAsync("generate", "--model", "out/final", "--prompt", "What is 1 plus 1?", "--max-new-tokens", "2");
        Assert.True(merged.ExitCode == 0, merged.ToString());
        Assert.Contains("answering with its merged model", merged.Err);
    }
}
