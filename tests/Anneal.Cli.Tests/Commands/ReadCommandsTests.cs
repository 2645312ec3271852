// `anneal files`, `anneal jobs`, `anneal models` against a real server (no trainer attached).
using System.Text.Json.Nodes;

namespace Anneal.Cli.Tests.Commands;

public class ReadCommandsTests
{
    static async Task<(CliSandbox, TestServer)> SetUpAsync()
    {
        var server = await TestServer.StartAsync();
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        return (box, server);
    }

    [Fact]
    public async Task Files_check_validates_locally_with_line_numbers()
    {
        using var box = new CliSandbox();
        box.Write("good.jsonl", Samples.Dataset(4));
        box.Write("bad.jsonl", Samples.Record(1) + "\n" + """{"messages":[{"role":"robot","content":"x"},{"role":"assistant","content":"y"}]}""" + "\n");
        var good = await box.RunAsync("files", "check", "good.jsonl");
        Assert.True(good.ExitCode == 0, good.ToString());
        Assert.Contains("OK: 4 examples", good.Out);
        var bad = await box.RunAsync("files", "check", "bad.jsonl");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("Line 2:", bad.Err);
        Assert.Contains("robot", bad.Err);
        var missing = await box.RunAsync("files", "check", "nope.jsonl");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("nope.jsonl: file not found", missing.Err);
    }

    [Fact]
    public async Task Files_upload_then_get_shows_the_validated_file()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Write("d.jsonl", Samples.Dataset(5));
        var up = await box.RunAsync("files", "upload", "d.jsonl", "--json");
        Assert.True(up.ExitCode == 0, up.ToString());
        var file = JsonNode.Parse(up.Out)!;
        Assert.Equal("ready", file["status"]!.GetValue<string>());
        var get = await box.RunAsync("files", "get", file["id"]!.GetValue<string>());
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Contains("num_examples: 5", get.Out);
        Assert.Contains("status: ready", get.Out);
        var list = await box.RunAsync("files", "list");
        Assert.Contains(file["id"]!.GetValue<string>(), list.Out);
        Assert.Contains("d.jsonl", list.Out);

        box.Write("bad.jsonl", "{}\n");
        var bad = await box.RunAsync("files", "upload", "bad.jsonl");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal(1, await server.FileCountAsync());
    }

    [Fact]
    public async Task Jobs_list_get_events_and_cancel()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(4));
        var submitted = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll", "--json");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        var id = JsonNode.Parse(submitted.Out)!["id"]!.GetValue<string>();

        var list = await box.RunAsync("jobs", "list", "--json");
        Assert.Equal(id, JsonNode.Parse(list.Out)!["jobs"]![0]!["id"]!.GetValue<string>());
        var table = await box.RunAsync("jobs", "list");
        Assert.Contains(id, table.Out);

        var get = await box.RunAsync("jobs", "get", id);
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Contains("status: queued", get.Out);
        Assert.Contains($"model: {Samples.TinyModel}", get.Out);

        var events = await box.RunAsync("jobs", "events", id);
        Assert.Contains("sft.created", events.Out);
        Assert.Contains("sft.queued", events.Out);
        var eventsJson = JsonNode.Parse((await box.RunAsync("jobs", "events", id, "--json")).Out)!;
        Assert.True(eventsJson["events"]!.AsArray().Count >= 2);

        // A queued job cannot be paused (only a running one with a checkpoint): the server's reason is shown.
        var pause = await box.RunAsync("jobs", "pause", id);
        Assert.Equal(1, pause.ExitCode);
        Assert.Contains("409", pause.Err);
        Assert.Contains("pause", pause.Err);

        var cancel = await box.RunAsync("jobs", "cancel", id);
        Assert.True(cancel.ExitCode == 0, cancel.ToString());
        Assert.Contains("cancelled", cancel.Out);
        var again = await box.RunAsync("jobs", "get", id, "--json");
        Assert.Equal("cancelled", JsonNode.Parse(again.Out)!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task An_unknown_job_id_exits_2_saying_it_is_not_in_the_organisation()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var result = await box.RunAsync("jobs", "get", "job_doesnotexist");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("no job job_doesnotexist in your organisation (404", result.Err);
    }

    [Fact]
    public async Task Jobs_list_rejects_an_unknown_status()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("jobs", "list", "--status", "finished");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("finished", result.Err);
    }

    [Fact]
    public async Task Models_lists_the_registry_and_fine_tuned_models()
    {
        var (box, server) = await SetUpAsync();
        await using var _ = server;
        using var __ = box;
        var json = JsonNode.Parse((await box.RunAsync("models", "--json")).Out)!;
        var ids = json["data"]!.AsArray().Select(m => m!["id"]!.GetValue<string>()).ToList();
        Assert.Contains("Qwen/Qwen3-4B", ids);
        Assert.Contains(Samples.TinyModel, ids);
        var table = await box.RunAsync("models");
        Assert.Contains("Qwen/Qwen3-VL-8B-Instruct", table.Out);
        var fineTuned = await box.RunAsync("models", "--fine-tuned");
        Assert.True(fineTuned.ExitCode == 0, fineTuned.ToString());
        Assert.Contains("No fine-tuned models yet.", fineTuned.Out);
    }

    [Fact]
    public async Task Read_commands_without_a_key_exit_2()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("jobs", "list");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("SYNTH_API_KEY is not set", result.Err);
    }
}
