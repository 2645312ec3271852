// The OpenAI-compatible API on the server's own port: /v1/chat/completions and /v1/completions
// are authenticated with the same keys as /api, their `model` resolved for the caller's
// organisation (ServedModels), and forwarded to the inference process (InferenceSupervisor) with
// the resolved folders; answers, server-sent events included, are streamed back as they come.
// /v1/models is answered here. Every error has OpenAI's shape {"error": {message, type, param, code}}.
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Server.Auth;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Inference;

public static class V1Api
{
    // Header names shared with Anneal.Inference's InferenceHost (the server does not reference it).
    const string ModelDirHeader = "X-Anneal-Model-Dir", AdapterDirHeader = "X-Anneal-Adapter-Dir", BaseModelHeader = "X-Anneal-Base-Model";

    static readonly HttpClient Upstream = new() { Timeout = Timeout.InfiniteTimeSpan };

    public static IEndpointRouteBuilder MapV1Api(this IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1").AddEndpointFilter(RequireKey);
        v1.MapGet("/models", Models);
        v1.MapPost("/chat/completions", (HttpContext http, Db db, ServerOptions o, InferenceSupervisor s) => Forward(http, db, o, s, "/v1/chat/completions"));
        v1.MapPost("/completions", (HttpContext http, Db db, ServerOptions o, InferenceSupervisor s) => Forward(http, db, o, s, "/v1/completions"));
        return app;
    }

    public static JsonObject Error(string message, string type, string? param = null, string? code = null) => new()
    {
        ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code },
    };

    static IResult Fail(int status, string message, string type, string? param = null, string? code = null) =>
        Results.Text(Error(message, type, param, code).ToJsonString(), "application/json", statusCode: status);

    /// <summary>The /api key check (ApiKeys.Require), with its 401 told in OpenAI's shape.</summary>
    static async ValueTask<object?> RequireKey(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        var result = await ApiKeys.Require(ctx, next);
        if (result is ProblemHttpResult { StatusCode: 401 } problem)
            return Fail(401, problem.ProblemDetails.Detail ?? "Invalid API key.", "invalid_request_error", code: "invalid_api_key");
        return result;
    }

    static async Task<IResult> Models(HttpContext http, Db db, ServerOptions options)
    {
        var models = await ServedModels.ListAsync(db, options, http.Org(), http.RequestAborted);
        return Results.Text(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(models.Select(m => (JsonNode)new JsonObject
            {
                ["id"] = m.Id, ["object"] = "model", ["created"] = m.Created.ToUnixTimeSeconds(), ["owned_by"] = m.OwnedBy,
            }).ToArray()),
        }.ToJsonString(), "application/json");
    }

    /// <summary>A request to the inference process for `served`, carrying its folders and the process key.</summary>
    public static HttpRequestMessage UpstreamRequest(InferenceEndpoint endpoint, string path, byte[] body, ServedModel served)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, endpoint.Url + path) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", endpoint.Key);
        request.Headers.Add(ModelDirHeader, served.ModelDir);
        if (served.AdapterDir is { } adapter) request.Headers.Add(AdapterDirHeader, adapter);
        if (served.BaseModel is { } baseModel) request.Headers.Add(BaseModelHeader, baseModel);
        return request;
    }

    /// <summary>Sends to the inference process (no timeout: answers stream as long as they take).</summary>
    public static Task<HttpResponseMessage> SendUpstreamAsync(HttpRequestMessage request, CancellationToken ct) =>
        Upstream.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);

    static async Task<IResult> Forward(HttpContext http, Db db, ServerOptions options, InferenceSupervisor supervisor, string path)
    {
        using var buffer = new MemoryStream();
        await http.Request.Body.CopyToAsync(buffer, http.RequestAborted);
        var body = buffer.ToArray();
        string? model;
        try
        {
            if (JsonNode.Parse(body) is not JsonObject o) return Fail(400, "The request body must be a JSON object.", "invalid_request_error");
            model = o["model"] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;
        }
        catch (JsonException e) { return Fail(400, $"The request body is not valid JSON: {e.Message}", "invalid_request_error"); }
        if (string.IsNullOrEmpty(model)) return Fail(400, "you must provide a model parameter", "invalid_request_error", "model");

        var (served, error) = await ServedModels.ResolveAsync(db, options, http.Org(), model, http.RequestAborted);
        if (served is null)
            return Fail(404, $"The model `{model}` does not exist or you do not have access to it. ({error})", "invalid_request_error", "model", "model_not_found");

        InferenceEndpoint endpoint;
        try { endpoint = await supervisor.EnsureRunningAsync(http.RequestAborted); }
        catch (InferenceUnavailableException e) { return Fail(503, e.Message, "server_error", code: "inference_unavailable"); }

        using var request = UpstreamRequest(endpoint, path, body, served);
        HttpResponseMessage response;
        try { response = await Upstream.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, http.RequestAborted); }
        catch (HttpRequestException e) { return Fail(503, $"the inference process did not answer ({e.Message}); the next request restarts it", "server_error", code: "inference_unavailable"); }

        using (response)
        {
            http.Response.StatusCode = (int)response.StatusCode;
            http.Response.ContentType = response.Content.Headers.ContentType?.ToString() ?? "application/json";
            if (http.Response.ContentType.StartsWith("text/event-stream", StringComparison.Ordinal)) http.Response.Headers.CacheControl = "no-cache";
            await using var stream = await response.Content.ReadAsStreamAsync(http.RequestAborted);
            var chunk = new byte[16 * 1024];
            int read;
            // Chunk by chunk with a flush each, so streamed tokens reach the client as they are made.
            while ((read = await stream.ReadAsync(chunk, http.RequestAborted)) > 0)
            {
                await http.Response.Body.WriteAsync(chunk.AsMemory(0, read), http.RequestAborted);
                await http.Response.Body.FlushAsync(http.RequestAborted);
            }
        }
        return Results.Empty;
    }
}
