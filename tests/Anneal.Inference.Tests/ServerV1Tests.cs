// /v1 on the control plane: the same API keys and organisation isolation as /api, model ids
// resolved per organisation (base, fft:, ft: as an adapter on the shared base), requests forwarded
// to the inference server and streamed back; the OpenAI library sees one OpenAI-compatible server.
using System.ClientModel;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Server;
using Anneal.Server.Auth;
using Anneal.Server.Storage;
using OpenAI;
using OpenAI.Chat;

namespace Anneal.Inference.Tests;

[Collection(ServingCollection.Name)]
public sealed class ServerV1Tests(ServingFixture f) : IAsyncLifetime
{
    const string Prompt = "What is the capital of France?";
    const string FtId = "ft:anneal/tiny-qwen3:job_lora1";
    const string FftId = "fft:anneal/tiny-qwen3:job_full1";
    RunningServer _server = null!;
    string _dataDir = "";
    string _key = "", _otherKey = "";

    public async Task InitializeAsync()
    {
        _dataDir = Path.Combine(Path.GetTempPath(), "anneal-v1-tests", Guid.NewGuid().ToString("n"));
        _server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0", DataDir = _dataDir, InferenceUrl = f.Server.BaseUrl, InferenceKey = ServingFixture.Key,
        });
        _key = _server.FirstApiKey!;
        _otherKey = await ApiKeys.CreateAsync(_dataDir, "other-org");
        var db = Db.Open(_dataDir);
        using var conn = db.Connect();
        foreach (var (id, path) in new[] { (FtId, f.MergedDir), (FftId, f.FftDir) })
            Db.Exec(conn, null, "INSERT INTO fine_tuned_models (id, org, base_model, job_id, path, status, created_at) VALUES (@id, 'default', 'anneal/tiny-qwen3', @job, @path, 'succeeded', @t)",
                ("@id", id), ("@job", id.Split(':')[^1]), ("@path", path), ("@t", Db.Now()));
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        try { Directory.Delete(_dataDir, recursive: true); } catch (IOException) { }
    }

    ChatClient Client(string model, string? key = null) =>
        new(model, new ApiKeyCredential(key ?? _key), new OpenAIClientOptions { Endpoint = new Uri(_server.BaseUrl + "/v1") });

    static ChatCompletionOptions Greedy() => new() { Temperature = 0, MaxOutputTokenCount = 20 };

    async Task<string> Direct(string model) =>
        (await new ChatClient(model, new ApiKeyCredential(ServingFixture.Key), new OpenAIClientOptions { Endpoint = new Uri(f.Server.BaseUrl + "/v1") })
            .CompleteChatAsync([new UserChatMessage(Prompt)], Greedy())).Value.Content[0].Text;

    [Fact]
    public async Task Base_fft_and_ft_ids_of_the_organisation_answer_through_the_server()
    {
        Assert.Equal(await Direct(ServingFixture.BaseId), (await Client("anneal/tiny-qwen3").CompleteChatAsync([new UserChatMessage(Prompt)], Greedy())).Value.Content[0].Text);
        Assert.Equal(await Direct(ServingFixture.FftId), (await Client(FftId).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy())).Value.Content[0].Text);
        ChatCompletion ft = await Client(FtId).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy());
        Assert.Equal(await Direct(ServingFixture.FtId), ft.Content[0].Text);
        Assert.Equal(FtId, ft.Model);
        // The ft: model is served as its adapter on the base, not as the merged copy.
        var stats = f.Server.Catalog.LoadedEngines.Single(e => e.ModelDir == Path.GetFullPath(Path.Combine(_dataDir, "models", "anneal", "tiny-qwen3")));
        Assert.Contains(Path.GetFullPath(f.AdapterDir), stats.LoadedAdapters);
    }

    [Fact]
    public async Task Streaming_passes_through_the_server()
    {
        var text = new StringBuilder();
        var chunks = 0;
        await foreach (var u in Client(FtId).CompleteChatStreamingAsync([new UserChatMessage(Prompt)], Greedy()))
        {
            chunks++;
            foreach (var p in u.ContentUpdate) text.Append(p.Text);
        }
        Assert.Equal(await Direct(ServingFixture.FtId), text.ToString());
        Assert.True(chunks > 3);
    }

    [Fact]
    public async Task Another_organisations_model_is_not_found_and_a_bad_key_is_refused()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client(FtId, _otherKey).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy()));
        Assert.Equal(404, e.Status);
        Assert.Contains("does not exist or you do not have access", e.Message);
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client("Qwen/Qwen3-nope").CompleteChatAsync([new UserChatMessage(Prompt)], Greedy()));
        Assert.Equal(404, e.Status);
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(FtId, "ank_wrong").CompleteChatAsync([new UserChatMessage(Prompt)], Greedy()));
        Assert.Equal(401, e.Status);
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(FtId).CompleteChatAsync([new UserChatMessage(Prompt)], new ChatCompletionOptions { Temperature = -1 }));
        Assert.Equal(400, e.Status);
        Assert.Contains("temperature -1 is out of range", e.Message);
    }

    [Fact]
    public async Task Models_lists_the_tiny_model_and_only_the_callers_fine_tuned_models()
    {
        async Task<List<string>> Ids(string key)
        {
            using var http = new HttpClient();
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
            var list = await http.GetFromJsonAsync<JsonObject>(_server.BaseUrl + "/v1/models");
            return list!["data"]!.AsArray().Select(m => m!["id"]!.GetValue<string>()).ToList();
        }
        var mine = await Ids(_key);
        Assert.Contains("anneal/tiny-qwen3", mine);
        Assert.Contains(FtId, mine);
        Assert.Contains(FftId, mine);
        var theirs = await Ids(_otherKey);
        Assert.Contains("anneal/tiny-qwen3", theirs);
        Assert.DoesNotContain(FtId, theirs);
    }

    [Fact]
    public async Task Missing_key_and_missing_model_field_get_openai_shaped_errors()
    {
        using var http = new HttpClient();
        var response = await http.PostAsJsonAsync(_server.BaseUrl + "/v1/chat/completions", new JsonObject { ["model"] = FtId });
        Assert.Equal(401, (int)response.StatusCode);
        Assert.Equal("invalid_api_key", (await response.Content.ReadFromJsonAsync<JsonObject>())!["error"]!["code"]!.GetValue<string>());
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", _key);
        response = await http.PostAsJsonAsync(_server.BaseUrl + "/v1/chat/completions", new JsonObject { ["messages"] = new JsonArray() });
        Assert.Equal(400, (int)response.StatusCode);
        Assert.Equal("model", (await response.Content.ReadFromJsonAsync<JsonObject>())!["error"]!["param"]!.GetValue<string>());
    }

    HttpClient Api(string key)
    {
        var http = new HttpClient { BaseAddress = new Uri(_server.BaseUrl + "/api/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    [Fact]
    public async Task A_deployment_loads_the_model_reports_ready_with_the_endpoint_and_stops()
    {
        using var api = Api(_key);
        var created = await api.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = FtId });
        Assert.Equal(201, (int)created.StatusCode);
        var d = (await created.Content.ReadFromJsonAsync<JsonObject>())!;
        var id = d["id"]!.GetValue<string>();
        Assert.StartsWith("dep_", id);
        Assert.Equal(_server.BaseUrl + "/v1", d["endpoint"]!.GetValue<string>());
        for (var i = 0; i < 100 && d["status"]!.GetValue<string>() == "loading"; i++)
        {
            await Task.Delay(100);
            d = (await api.GetFromJsonAsync<JsonObject>($"learning/deployments/{id}"))!;
        }
        Assert.Equal("ready", d["status"]!.GetValue<string>());
        Assert.Equal("cpu", d["device"]!.GetValue<string>());
        // Deploying the same model again gives the same deployment.
        var again = await api.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = FtId });
        Assert.Equal(200, (int)again.StatusCode);
        Assert.Equal(id, (await again.Content.ReadFromJsonAsync<JsonObject>())!["id"]!.GetValue<string>());

        using var other = Api(_otherKey);
        Assert.Equal(404, (int)(await other.GetAsync($"learning/deployments/{id}")).StatusCode);
        Assert.Empty((await other.GetFromJsonAsync<JsonObject>("learning/deployments"))!["data"]!.AsArray());

        var stopped = await api.DeleteAsync($"learning/deployments/{id}");
        Assert.Equal("stopped", (await stopped.Content.ReadFromJsonAsync<JsonObject>())!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Deploying_an_unknown_or_foreign_model_or_on_a_gpu_not_set_aside_is_refused()
    {
        using var api = Api(_key);
        var unknown = await api.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = "ft:anneal/tiny-qwen3:job_nope" });
        Assert.Equal(404, (int)unknown.StatusCode);
        using var other = Api(_otherKey);
        Assert.Equal(404, (int)(await other.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = FtId })).StatusCode);
        var gpu = await api.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = FtId, ["device"] = "gpu" });
        Assert.Equal(422, (int)gpu.StatusCode);
        Assert.Contains("--inference-gpu", await gpu.Content.ReadAsStringAsync());
        var missing = await api.PostAsJsonAsync("learning/deployments", new JsonObject());
        Assert.Equal(422, (int)missing.StatusCode);
        Assert.Contains("model", await missing.Content.ReadAsStringAsync());
    }
}
