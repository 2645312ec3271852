// A real server for one test: Kestrel on 127.0.0.1 port 0, a fresh data dir with its own SQLite
// file (or its own PostgreSQL database: Stores/TestStore), and an HttpClient carrying the first API key. Restart() stops it and starts a new server
// on the same data dir.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server;

namespace Anneal.Server.Tests;

public sealed class TestServer : IAsyncDisposable
{
    public const string GoodLine = """{"messages":[{"role":"user","content":"What is 2+2?"},{"role":"assistant","content":"4"}]}""";

    /// <summary>A valid record whose image the server refuses to fetch (a loopback address): its file ends `failed`.</summary>
    public const string LineWithRefusedImage = """{"messages":[{"role":"user","content":[{"type":"text","text":"Colour?"},{"type":"image_url","image_url":{"url":"https://127.0.0.1:9/red.png"}}]},{"role":"assistant","content":"Red."}]}""";

    public ServerOptions Options { get; private set; }
    public RunningServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public string ApiKey { get; private set; } = "";
    public string DataDir => Options.DataDir;

    TestServer(ServerOptions options) => Options = options;

    public static async Task<TestServer> StartAsync(Func<ServerOptions, ServerOptions>? configure = null, string? dataDir = null)
    {
        var dir = dataDir ?? Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        var options = new ServerOptions { Urls = "http://127.0.0.1:0", DataDir = dir, CancelGracePeriod = TimeSpan.FromSeconds(5), Database = Stores.TestStore.NewDatabase() };
        var t = new TestServer(configure?.Invoke(options) ?? options);
        await t.StartServerAsync();
        return t;
    }

    async Task StartServerAsync()
    {
        Server = await ServerHost.StartAsync(Options);
        if (Server.FirstApiKey is { } key) ApiKey = key;
        Http = Client(ApiKey);
    }

    public HttpClient Client(string? key)
    {
        var http = new HttpClient { BaseAddress = new Uri(Server.BaseUrl + "/api/"), Timeout = TimeSpan.FromSeconds(60) };
        if (key is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    public async Task RestartAsync(Func<ServerOptions, ServerOptions>? configure = null)
    {
        await Server.DisposeAsync();
        Http.Dispose();
        if (configure is not null) Options = configure(Options);
        await StartServerAsync();
    }

    /// <summary>Runs SQL on the server's store directly (SQLite file or PostgreSQL database), as a crash or another process would leave it; returns the rows changed.</summary>
    public int Sql(string sql)
    {
        using var db = new Storage.Db(DataDir, Options.Database);
        using var conn = db.Connect();
        return Storage.Db.Exec(conn, null, sql);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        Http.Dispose();
        try { Directory.Delete(DataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    // ---- API helpers ----

    /// <summary>A client of /api/workers/ as `anneal worker` calls it: the worker token as bearer (none when null).</summary>
    public HttpClient WorkerClient(string? token)
    {
        var http = new HttpClient { BaseAddress = new Uri(Server.BaseUrl + "/api/workers/") };
        if (token is not null) http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    public static MultipartFormDataContent Multipart(byte[] bytes, string fileName = "train.jsonl", string? purpose = "fine-tune")
    {
        var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(bytes);
        file.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        form.Add(file, "file", fileName);
        if (purpose is not null) form.Add(new StringContent(purpose), "purpose");
        return form;
    }

    public static byte[] Dataset(int lines) =>
        Encoding.UTF8.GetBytes(string.Join("\n", Enumerable.Range(0, lines).Select(i => GoodLine.Replace("2+2", $"2+{i}"))) + "\n");

    public Task<HttpResponseMessage> UploadAsync(byte[] bytes, string fileName = "train.jsonl", HttpClient? client = null) =>
        (client ?? Http).PostAsync("learning/files", Multipart(bytes, fileName));

    public async Task<FileObject> UploadReadyAsync(byte[]? bytes = null, HttpClient? client = null)
    {
        var response = await UploadAsync(bytes ?? Dataset(3), client: client);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        var file = (await response.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
        return await WaitFileAsync(file.Id, client);
    }

    /// <summary>Uploads a dataset the server must refuse: the 422 problem, with its errors.</summary>
    public async Task<JsonObject> UploadRefusedAsync(byte[] bytes, HttpClient? client = null)
    {
        var problem = await ProblemAsync(await UploadAsync(bytes, client: client), HttpStatusCode.UnprocessableEntity);
        Assert.NotEmpty(problem["errors"]!.AsArray());
        return problem;
    }

    public async Task<FileObject> WaitFileAsync(string id, HttpClient? client = null)
    {
        for (var i = 0; i < 600; i++)
        {
            var file = (await (client ?? Http).GetFromJsonAsync<FileObject>($"learning/files/{id}", AnnealJson.Options))!;
            if (file.Status != FileStatus.Processing) return file;
            await Task.Delay(50);
        }
        throw new TimeoutException($"file {id} still processing");
    }

    public static JsonContent Json(object body) => JsonContent.Create(body, options: AnnealJson.Options);

    public static object JobBody(string fileId, string model = "anneal/tiny-qwen3", JsonObject? hyperparameters = null) => new JsonObject
    {
        ["model"] = model,
        ["training_type"] = "sft_offline",
        ["training_file_id"] = fileId,
        ["hyperparameters"] = hyperparameters ?? new JsonObject { ["n_epochs"] = 1, ["learning_rate"] = 0.001 },
    };

    public async Task<JobObject> CreateJobAsync(string fileId, JsonObject? hyperparameters = null, string model = "anneal/tiny-qwen3")
    {
        var response = await Http.PostAsync("learning/jobs", Json(JobBody(fileId, model, hyperparameters)));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
    }

    public async Task<JobObject> StartJobAsync(string jobId)
    {
        var response = await Http.PostAsync($"learning/jobs/{jobId}/start", null);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
    }

    public async Task<JobObject> GetJobAsync(string jobId) =>
        (await Http.GetFromJsonAsync<JobObject>($"learning/jobs/{jobId}", AnnealJson.Options))!;

    public async Task<JobObject> WaitJobAsync(string jobId, Func<JobObject, bool> until, int seconds = 60)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            var job = await GetJobAsync(jobId);
            if (until(job)) return job;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"job {jobId} is '{job.Status}' after {seconds}s");
            await Task.Delay(50);
        }
    }

    public async Task<List<JobEvent>> EventsAsync(string jobId) =>
        (await Http.GetFromJsonAsync<EventList>($"learning/jobs/{jobId}/events?limit=1000", AnnealJson.Options))!.Events.ToList();

    /// <summary>
    /// Reads a problem answer, checking the media type (problem+json when the request's Accept named
    /// it, else application/json) and the members every problem has.
    /// </summary>
    public static async Task<JsonObject> ProblemAsync(HttpResponseMessage response, HttpStatusCode status)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        var askedForProblemJson = response.RequestMessage?.Headers.Accept.Any(a => a.MediaType == "application/problem+json") == true;
        Assert.Equal(askedForProblemJson ? "application/problem+json" : "application/json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(text)!.AsObject();
        Assert.Equal((int)status, problem["status"]!.GetValue<int>());
        Assert.False(string.IsNullOrEmpty(problem["title"]?.GetValue<string>()));
        Assert.False(string.IsNullOrEmpty(problem["detail"]?.GetValue<string>()));
        Assert.False(string.IsNullOrEmpty(problem["type"]?.GetValue<string>()));
        Assert.False(string.IsNullOrEmpty(problem["code"]?.GetValue<string>()));
        return problem;
    }

    /// <summary>One {line?, field?, message} error as ErrorItem prints it: `Line N: field: message`.</summary>
    public static string ErrorText(JsonNode error) =>
        new ErrorItem(error["line"]?.GetValue<int>(), error["field"]?.GetValue<string>(), error["message"]!.GetValue<string>()).ToString();

    public static string ErrorsText(JsonObject problem) =>
        string.Join("\n", (problem["errors"]?.AsArray() ?? []).Select(e => e!.ToJsonString()));
}
