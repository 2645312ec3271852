// The success paths of `anneal models export` and `anneal deploy stop` against a real server:
// an exported merged folder and LoRA adapter are the job's files, byte for byte, and load again as
// a model; a ready deployment stops, and the list says so. The inference process behind the
// deployment is a stand-in that answers the one-token load request.
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Server.Storage;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Cli.Tests.Deploy;

[Collection("trainer")]
public class DeployAndExportTests
{
    const string FtId = "ft:anneal/tiny-qwen3:job_exp";

    static CliSandbox Box(TestServer server)
    {
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        return box;
    }

    /// <summary>A LoRA job's output as the trainer leaves it: final/ (PEFT adapter, B ≠ 0) and final/merged/, registered as FtId.</summary>
    static (string Final, string Merged) RegisterLoraJob(TestServer server)
    {
        NativeLibraries.EnsureTorchLoaded();
        var baseDir = Path.Combine(server.DataDir, "models", "anneal", "tiny-qwen3");
        TinyModel.EnsureCreated(baseDir);
        var final = Path.Combine(server.DataDir, "jobs", "job_exp", "output", "final");
        var merged = Path.Combine(final, "merged");
        using (var model = ModelFolder.Load(baseDir, CPU, ScalarType.Float32, new LoraSettings(4, 8, 0, ["q_proj", "v_proj"])))
        {
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                    if (name.Contains(".lora_")) p.fill_(0.05);
            Lora.SaveAdapter(model, final, "anneal/tiny-qwen3");
            ModelFolder.Save(model, merged, baseDir);
        }
        using var db = Db.OpenDataDir(server.DataDir);
        using var conn = db.Connect();
        Db.Exec(conn, null, "INSERT INTO fine_tuned_models (id, org, base_model, job_id, path, status, created_at) VALUES (@id, 'default', 'anneal/tiny-qwen3', 'job_exp', @path, 'succeeded', @t)",
            ("@id", FtId), ("@path", merged), ("@t", Db.Now()));
        return (final, merged);
    }

    static List<string> Names(string dir) => [.. Directory.GetFiles(dir).Select(f => Path.GetFileName(f)).Order()];

    static void AssertSameFiles(string expected, string actual, string[]? filesOnly = null)
    {
        var names = filesOnly?.ToList() ?? Names(expected);
        Assert.Equal(names, Names(actual));
        foreach (var name in names)
            Assert.True(File.ReadAllBytes(Path.Combine(expected, name)).SequenceEqual(File.ReadAllBytes(Path.Combine(actual, name))), $"{name} differs");
    }

    [Fact]
    public async Task Export_writes_the_merged_folder_and_the_adapter_which_load_again_as_the_fine_tuned_model()
    {
        await using var server = await TestServer.StartAsync();
        var (final, merged) = RegisterLoraJob(server);
        using var box = Box(server);

        var r = await box.RunAsync("models", "export", FtId, "--out", "exported");
        Assert.True(r.ExitCode == 0, r.ToString());
        var exported = Path.Combine(box.Dir, "exported");
        Assert.Contains($"Exported {FtId} (merged) to {exported}", r.Out);
        Assert.Contains($"vllm serve {exported}", r.Out);
        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            Assert.True(File.Exists(Path.Combine(exported, file)), $"{file} missing: {r}");
        AssertSameFiles(merged, exported);
        Assert.Empty(Directory.GetDirectories(box.Dir, "exported.partial-*"));

        var a = await box.RunAsync("models", "export", FtId, "--out", "adapter", "--format", "adapter");
        Assert.True(a.ExitCode == 0, a.ToString());
        var adapter = Path.Combine(box.Dir, "adapter");
        AssertSameFiles(final, adapter, filesOnly: ["adapter_config.json", "adapter_model.safetensors"]);
        Assert.Equal("anneal/tiny-qwen3", JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))!["base_model_name_or_path"]!.GetValue<string>());

        // Both load: the base with the exported adapter computes what the exported merged model does.
        var baseDir = Path.Combine(server.DataDir, "models", "anneal", "tiny-qwen3");
        using var mergedModel = ModelFolder.Load(exported, CPU, ScalarType.Float32);
        using var withAdapter = ModelFolder.Load(baseDir, CPU, ScalarType.Float32, new LoraSettings(4, 8, 0, ["q_proj", "v_proj"]));
        Lora.LoadAdapter(withAdapter, adapter);
        using var plainBase = ModelFolder.Load(baseDir, CPU, ScalarType.Float32);
        using var ids = tensor(new long[] { 1, 5, 9, 40, 77, 3, 200, 11 }).view(1, -1);
        using var pos = arange(8, dtype: ScalarType.Int64).view(1, -1);
        foreach (var m in new[] { mergedModel, withAdapter, plainBase }) m.eval();
        using (no_grad())
        {
            using var expected = mergedModel.call(ids, pos, null);
            using var actual = withAdapter.call(ids, pos, null);
            using var baseLogits = plainBase.call(ids, pos, null);
            Assert.True(expected.allclose(actual, rtol: 1e-4, atol: 1e-4), "the adapter on its base does not compute the merged model");
            Assert.False(expected.allclose(baseLogits, rtol: 1e-4, atol: 1e-4), "the fine-tune should differ from its base");
        }
    }

    static async Task<(WebApplication App, string Url)> StandInInference()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        app.MapPost("/v1/completions", () => Results.Json(new { id = "cmpl-1", @object = "text_completion", choices = new[] { new { index = 0, text = "!", finish_reason = "length" } } }));
        await app.StartAsync();
        return (app, app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
    }

    [Fact]
    public async Task Deploy_stop_stops_a_ready_deployment_and_the_list_says_so()
    {
        var (inference, url) = await StandInInference();
        await using var _ = inference;
        await using var server = await TestServer.StartAsync(inferenceUrl: url);
        using var box = Box(server);

        var deployed = await box.RunAsync("deploy", "anneal/tiny-qwen3", "--timeout", "30");
        Assert.True(deployed.ExitCode == 0, deployed.ToString());
        Assert.Contains("status: ready (cpu)", deployed.Out);
        var id = deployed.Out.Split('\n').Single(l => l.StartsWith("deployment: ")).Split(' ')[1].Trim();
        Assert.StartsWith("dep_", id);

        var stopped = await box.RunAsync("deploy", "stop", id);
        Assert.True(stopped.ExitCode == 0, stopped.ToString());
        Assert.Equal($"deployment {id} (anneal/tiny-qwen3): stopped", stopped.Out.Trim());
        var list = await box.RunAsync("deploy", "list", "--json");
        Assert.Equal(0, list.ExitCode);
        var only = Assert.Single(JsonNode.Parse(list.Out)!["data"]!.AsArray())!;
        Assert.Equal(id, only["id"]!.GetValue<string>());
        Assert.Equal("stopped", only["status"]!.GetValue<string>());

        // Deploying again makes a new deployment; the stopped one is not reused.
        var again = await box.RunAsync("deploy", "anneal/tiny-qwen3", "--json");
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.NotEqual(id, JsonNode.Parse(again.Out)!["id"]!.GetValue<string>());
        var unknown = await box.RunAsync("deploy", "stop", "dep_nope");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("dep_nope", unknown.Err);
    }
}
