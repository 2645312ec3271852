// GET /api/workers/jobs/{id}/model[/{path}]: a job's base model as the server has it, for a worker
// whose host lacks it. The listing names every file with its size and sha256 (hidden files and
// partial downloads left out); each file comes whole or as a Range; nothing outside the listing is
// served; a model the server does not hold is a 404 naming it and where the server looked.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Workers;

public class WorkerModelsTests
{
    const string Token = "worker-secret";
    const string Model = "Qwen/Qwen3-0.6B";

    static HttpClient Worker(TestServer t, string token = Token) => t.WorkerClient(token);

    static string Sha(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    [Fact]
    public async Task The_server_lists_and_serves_the_base_model_it_holds_whole_or_by_range_and_nothing_else()
    {
        var models = Directory.CreateTempSubdirectory("anneal-models-").FullName;
        var folder = Path.Combine(models, "Qwen", "Qwen3-0.6B");
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        Directory.CreateDirectory(Path.Combine(folder, ".cache"));
        var weights = new byte[300_000];
        new Random(7).NextBytes(weights);
        File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), weights);
        File.WriteAllText(Path.Combine(folder, "config.json"), "{\"model_type\":\"qwen3\"}");
        File.WriteAllText(Path.Combine(folder, "sub", "extra.txt"), "nested");
        File.WriteAllText(Path.Combine(folder, ".cache", "lock"), "hidden");
        File.WriteAllText(Path.Combine(folder, "tokenizer.json.partial"), "half");
        File.WriteAllText(Path.Combine(models, "secret.txt"), "outside the model folder");

        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = Token, ModelsDir = models, AllowModelDownload = false });
        using var worker = Worker(t);
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id, model: Model);

        var manifest = (await worker.GetFromJsonAsync<WorkerModel>($"jobs/{job.Id}/model", AnnealJson.Options))!;
        Assert.Equal(Model, manifest.Model);
        Assert.Equal(["config.json", "model.safetensors", "sub/extra.txt"], manifest.Files.Select(f => f.Path).ToArray());
        var listed = manifest.Files.Single(f => f.Path == "model.safetensors");
        Assert.Equal(weights.Length, listed.Bytes);
        Assert.Equal(Sha(weights), listed.Sha256);

        using (var whole = await worker.GetAsync($"jobs/{job.Id}/model/model.safetensors"))
        {
            Assert.Equal(HttpStatusCode.OK, whole.StatusCode);
            Assert.Equal(Sha(weights), whole.Headers.GetValues(WorkerProtocol.Sha256Header).Single());
            Assert.Equal(weights, await whole.Content.ReadAsByteArrayAsync());
        }
        // The rest of a broken transfer: bytes 100000 onward.
        using (var request = new HttpRequestMessage(HttpMethod.Get, $"jobs/{job.Id}/model/model.safetensors"))
        {
            request.Headers.Range = new RangeHeaderValue(100_000, null);
            using var rest = await worker.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, rest.StatusCode);
            Assert.Equal(weights[100_000..], await rest.Content.ReadAsByteArrayAsync());
        }
        Assert.Equal("nested", await worker.GetStringAsync($"jobs/{job.Id}/model/sub/extra.txt"));

        // Nothing outside the listing: hidden files, partial downloads, other folders, unknown jobs, bad tokens.
        foreach (var path in new[] { ".cache/lock", "tokenizer.json.partial", "../secret.txt", "..%2Fsecret.txt", "missing.bin" })
        {
            using var refused = await worker.GetAsync($"jobs/{job.Id}/model/{path}");
            Assert.True(refused.StatusCode == HttpStatusCode.NotFound, $"{path}: {refused.StatusCode}");
        }
        using (var unknown = await worker.GetAsync("jobs/job_nope/model"))
            Assert.Contains("job_nope", (await TestServer.ProblemAsync(unknown, HttpStatusCode.NotFound))["detail"]!.GetValue<string>());
        using (var stranger = Worker(t, "not-the-token"))
            Assert.Equal(HttpStatusCode.Unauthorized, (await stranger.GetAsync($"jobs/{job.Id}/model")).StatusCode);

        // A changed file is hashed again (the listing is cached by size and time of writing).
        File.WriteAllText(Path.Combine(folder, "config.json"), "{\"model_type\":\"qwen3\",\"changed\":true}");
        File.SetLastWriteTimeUtc(Path.Combine(folder, "config.json"), DateTime.UtcNow.AddMinutes(1));
        var again = (await worker.GetFromJsonAsync<WorkerModel>($"jobs/{job.Id}/model", AnnealJson.Options))!;
        Assert.Equal(Sha(File.ReadAllBytes(Path.Combine(folder, "config.json"))), again.Files.Single(f => f.Path == "config.json").Sha256);
    }

    [Fact]
    public async Task A_model_the_server_does_not_hold_is_a_404_naming_it_and_where_the_server_looked()
    {
        var models = Directory.CreateTempSubdirectory("anneal-models-").FullName;
        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = Token, ModelsDir = models, AllowModelDownload = false });
        using var worker = Worker(t);
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id, model: Model);

        using var response = await worker.GetAsync($"jobs/{job.Id}/model");
        var problem = await TestServer.ProblemAsync(response, HttpStatusCode.NotFound);
        Assert.Equal("model_not_on_server", problem["code"]!.GetValue<string>());
        var detail = problem["detail"]!.GetValue<string>();
        Assert.Contains(Model, detail);
        Assert.Contains(models, detail);
        using var fileOfIt = await worker.GetAsync($"jobs/{job.Id}/model/config.json");
        Assert.Equal(HttpStatusCode.NotFound, fileOfIt.StatusCode);
    }
}
