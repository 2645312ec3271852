// A small typed client for the Anneal HTTP API (DESIGN.md §3) over HttpClient, reading the
// Anneal.Core.Contracts records with AnnealJson.Options. Non-success answers become ApiException
// (status + problem+json detail + line-numbered errors); a server that cannot be reached becomes
// BackendUnreachableException naming the URL.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Http;

/// <summary>The server answered with an error status (problem+json where it could).</summary>
public sealed class ApiException(HttpStatusCode status, string method, string url, string? title, string? detail, IReadOnlyList<ErrorItem> errors)
    : Exception($"{method} {url} failed: {(int)status} {title ?? status.ToString()}{(detail is null ? "" : ": " + detail)}")
{
    public HttpStatusCode Status { get; } = status;
    public string Url { get; } = url;
    public string? Title { get; } = title;
    public string? Detail { get; } = detail;
    public IReadOnlyList<ErrorItem> Errors { get; } = errors;
    /// <summary>The problem+json body when there was one (e.g. max_bytes of a 413).</summary>
    public JsonObject? Problem { get; init; }
}

/// <summary>No connection could be made (refused, DNS, TLS, timeout).</summary>
public sealed class BackendUnreachableException(string baseUrl, string reason, Exception inner)
    : Exception($"cannot reach the Anneal backend at {baseUrl}: {reason}", inner)
{
    public string BaseUrl { get; } = baseUrl;
}

/// <summary>Something answers at the address, but not the Anneal API (404 without problem+json, no /health).</summary>
public sealed class NoAnnealApiException(string baseUrl)
    : Exception($"no Anneal API at {baseUrl} (GET {baseUrl}/health failed)")
{
    public string BaseUrl { get; } = baseUrl;
}

public sealed class AnnealClient : IDisposable
{
    readonly HttpClient _http;
    /// <summary>Base URL ending in /api, e.g. "http://127.0.0.1:8000/api".</summary>
    public string BaseUrl { get; }

    public AnnealClient(string apiBaseUrl, string? apiKey, TimeSpan? timeout = null)
    {
        BaseUrl = apiBaseUrl.TrimEnd('/');
        // Uploads send `Expect: 100-continue`: the server answers 413 for an oversized file before
        // the body is sent, instead of closing the connection in the middle of it (broken pipe).
        var handler = new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(5) };
        _http = new HttpClient(handler) { BaseAddress = new Uri(BaseUrl + "/"), Timeout = timeout ?? TimeSpan.FromMinutes(10) };
        if (apiKey is not null) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("anneal-cli", "1.0"));
    }

    public void Dispose() => _http.Dispose();

    // ---- files ----

    /// <summary>
    /// Uploads a JSONL file: multipart field `file`, form field `purpose`. A connection closed in
    /// the middle of the body (a server that refuses it without waiting for 100-continue) is tried
    /// once more, so that the server's answer (413 with max_bytes, say) can be read.
    /// </summary>
    public async Task<FileObject> UploadFileAsync(Stream content, string fileName, string purpose, CancellationToken ct)
    {
        var start = content.CanSeek ? content.Position : 0;
        try
        {
            return await SendAsync<FileObject>(HttpMethod.Post, "learning/files", UploadForm(content, fileName, purpose), ct, expectContinue: true);
        }
        catch (BackendUnreachableException e) when (content.CanSeek && e.InnerException is HttpRequestException { InnerException: IOException })
        {
            content.Position = start;
            return await SendAsync<FileObject>(HttpMethod.Post, "learning/files", UploadForm(content, fileName, purpose), ct, expectContinue: true);
        }
    }

    static MultipartFormDataContent UploadForm(Stream content, string fileName, string purpose)
    {
        var form = new MultipartFormDataContent();
        // The caller owns the stream: it may be sent a second time.
        var file = new StreamContent(new NonClosingStream(content));
        file.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        form.Add(file, "file", fileName);
        form.Add(new StringContent(purpose), "purpose");
        return form;
    }

    sealed class NonClosingStream(Stream inner) : Stream
    {
        public override bool CanRead => inner.CanRead;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => inner.ReadAsync(buffer, ct);
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    public Task<FileObject> GetFileAsync(string id, CancellationToken ct) =>
        SendAsync<FileObject>(HttpMethod.Get, $"learning/files/{Uri.EscapeDataString(id)}", null, ct);

    public Task<FileList> ListFilesAsync(int? limit, CancellationToken ct) =>
        SendAsync<FileList>(HttpMethod.Get, "learning/files" + Query(("limit", limit?.ToString())), null, ct);

    // ---- workers ----

    /// <summary>GET /api/workers (an admin key): the worker hosts registered with the server.</summary>
    public Task<Anneal.Server.Workers.WorkerList> ListWorkersAsync(CancellationToken ct) =>
        SendAsync<Anneal.Server.Workers.WorkerList>(HttpMethod.Get, "workers", null, ct);

    // ---- jobs ----

    public Task<JobObject> CreateJobAsync(CreateJobRequest request, string? idempotencyKey, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Post, "learning/jobs", JsonContent.Create(request, options: AnnealJson.Options), ct,
            idempotencyKey is null ? null : ("Idempotency-Key", idempotencyKey));

    public Task<JobObject> StartJobAsync(string id, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Post, $"learning/jobs/{Uri.EscapeDataString(id)}/start", null, ct);

    public Task<JobObject> CancelJobAsync(string id, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Post, $"learning/jobs/{Uri.EscapeDataString(id)}/cancel", null, ct);

    public Task<JobObject> PauseJobAsync(string id, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Post, $"learning/jobs/{Uri.EscapeDataString(id)}/pause", null, ct);

    public Task<JobObject> ResumeJobAsync(string id, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Post, $"learning/jobs/{Uri.EscapeDataString(id)}/resume", null, ct);

    public Task<JobObject> GetJobAsync(string id, CancellationToken ct) =>
        SendAsync<JobObject>(HttpMethod.Get, $"learning/jobs/{Uri.EscapeDataString(id)}", null, ct);

    public Task<JobList> ListJobsAsync(string? status, int? limit, CancellationToken ct) =>
        SendAsync<JobList>(HttpMethod.Get, "learning/jobs" + Query(("status", status), ("limit", limit?.ToString())), null, ct);

    public Task<EventList> GetEventsAsync(string id, long sinceSeq, int? limit, CancellationToken ct) =>
        SendAsync<EventList>(HttpMethod.Get,
            $"learning/jobs/{Uri.EscapeDataString(id)}/events" + Query(("since_seq", sinceSeq.ToString()), ("limit", limit?.ToString())), null, ct);

    /// <summary>GET …/jobs/{id}/metrics: points after <paramref name="afterStep"/> (all when null), of one name or all.</summary>
    public Task<MetricList> GetMetricsAsync(string id, long? afterStep, string? name, CancellationToken ct) =>
        SendAsync<MetricList>(HttpMethod.Get,
            $"learning/jobs/{Uri.EscapeDataString(id)}/metrics" + Query(("after_step", afterStep?.ToString()), ("name", name)), null, ct);

    // ---- models ----

    public Task<BaseModelList> ListBaseModelsAsync(CancellationToken ct) =>
        SendAsync<BaseModelList>(HttpMethod.Get, "models", null, ct);

    /// <summary>GET /api/health: true when an Anneal server answers at this address.</summary>
    public async Task<bool> IsHealthyAsync(CancellationToken ct)
    {
        try
        {
            using var response = await _http.GetAsync("health", ct);
            return response.IsSuccessStatusCode && (await response.Content.ReadAsStringAsync(ct)).Contains("\"ok\"", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
        {
            return false;
        }
    }

    public Task<FineTunedModelList> ListFineTunedModelsAsync(CancellationToken ct) =>
        SendAsync<FineTunedModelList>(HttpMethod.Get, "learning/models", null, ct);

    // ---- deployments ----

    public Task<DeploymentObject> CreateDeploymentAsync(CreateDeploymentRequest request, CancellationToken ct) =>
        SendAsync<DeploymentObject>(HttpMethod.Post, "learning/deployments", JsonContent.Create(request, options: AnnealJson.Options), ct);

    public Task<DeploymentObject> GetDeploymentAsync(string id, CancellationToken ct) =>
        SendAsync<DeploymentObject>(HttpMethod.Get, $"learning/deployments/{Uri.EscapeDataString(id)}", null, ct);

    public Task<DeploymentList> ListDeploymentsAsync(CancellationToken ct) =>
        SendAsync<DeploymentList>(HttpMethod.Get, "learning/deployments", null, ct);

    public Task<DeploymentObject> StopDeploymentAsync(string id, CancellationToken ct) =>
        SendAsync<DeploymentObject>(HttpMethod.Delete, $"learning/deployments/{Uri.EscapeDataString(id)}", null, ct);

    /// <summary>GET /learning/model-export: the model folder as a tar stream (dispose the response).</summary>
    public async Task<HttpResponseMessage> ExportModelAsync(string model, string format, CancellationToken ct)
    {
        var path = "learning/model-export" + Query(("model", model), ("format", format));
        HttpResponseMessage response;
        try { response = await _http.GetAsync(path, HttpCompletionOption.ResponseHeadersRead, ct); }
        catch (HttpRequestException e) { throw new BackendUnreachableException(BaseUrl, Reason(e), e); }
        if (response.IsSuccessStatusCode) return response;
        using (response) throw await ToApiException(response, "GET", $"{BaseUrl}/{path}", ct);
    }

    // ---- plumbing ----

    static string Query(params (string Key, string? Value)[] pairs)
    {
        var parts = pairs.Where(p => p.Value is not null).Select(p => $"{p.Key}={Uri.EscapeDataString(p.Value!)}").ToList();
        return parts.Count == 0 ? "" : "?" + string.Join("&", parts);
    }

    async Task<T> SendAsync<T>(HttpMethod method, string path, HttpContent? content, CancellationToken ct, (string Name, string Value)? header = null,
        bool expectContinue = false)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        if (expectContinue) request.Headers.ExpectContinue = true;
        if (header is { } h) request.Headers.TryAddWithoutValidation(h.Name, h.Value);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, ct);
        }
        catch (HttpRequestException e)
        {
            throw new BackendUnreachableException(BaseUrl, Reason(e), e);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new BackendUnreachableException(BaseUrl, $"no answer within {_http.Timeout.TotalSeconds:0} s", e);
        }
        using (response)
        {
            var url = $"{BaseUrl}/{path}";
            if (!response.IsSuccessStatusCode)
            {
                var error = await ToApiException(response, method.Method, url, ct);
                // A 404: is there an Anneal API at this address at all, or just a wrong path / another server?
                if (error.Status == HttpStatusCode.NotFound && !await IsHealthyAsync(ct))
                    throw new NoAnnealApiException(BaseUrl);
                throw error;
            }
            try
            {
                var value = await response.Content.ReadFromJsonAsync<T>(AnnealJson.Options, ct);
                return value ?? throw new ApiException(response.StatusCode, method.Method, url, "empty response", null, []);
            }
            catch (JsonException e)
            {
                throw new ApiException(response.StatusCode, method.Method, url, "unexpected response body", e.Message, []);
            }
        }
    }

    static string Reason(HttpRequestException e) => e.InnerException switch
    {
        SocketException { SocketErrorCode: SocketError.ConnectionRefused } => "connection refused (is the server running?)",
        SocketException { SocketErrorCode: SocketError.HostNotFound or SocketError.NoData } => "host not found",
        SocketException s => s.Message,
        { } inner => inner.Message,
        null => e.Message,
    };

    static async Task<ApiException> ToApiException(HttpResponseMessage response, string method, string url, CancellationToken ct)
    {
        string? title = null, detail = null;
        JsonObject? problemBody = null;
        var errors = new List<ErrorItem>();
        var body = await response.Content.ReadAsStringAsync(ct);
        try
        {
            if (JsonNode.Parse(body) is JsonObject problem)
            {
                problemBody = problem;
                title = problem["title"]?.GetValue<string>();
                detail = problem["detail"]?.GetValue<string>();
                if (problem["errors"] is JsonArray list)
                    foreach (var item in list)
                        if (item is JsonObject o)
                            errors.Add(new ErrorItem(o["line"]?.GetValue<int>(), o["field"]?.GetValue<string>(), o["message"]?.GetValue<string>() ?? o.ToJsonString()));
                // ASP.NET's ValidationProblem shape: {"errors": {"field": ["message", ...]}}.
                if (problem["errors"] is JsonObject byField)
                    foreach (var (field, messages) in byField)
                        foreach (var message in messages as JsonArray ?? [])
                            errors.Add(new ErrorItem(null, field, message?.ToString() ?? ""));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            // Not problem+json (a proxy's HTML page, say): show the start of the body.
            detail = body.Length > 200 ? body[..200] + "..." : body;
        }
        return new ApiException(response.StatusCode, method, url, title, detail, errors) { Problem = problemBody };
    }
}
