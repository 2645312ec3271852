// Answers from any OpenAI-compatible server (ours at <backend>/v1 by default, or vLLM, SGLang, …):
// POST {base}/chat/completions with temperature 0 (greedy, as local eval), the reply's content and
// usage. A failed request is an EndpointException naming the URL, the status and the server's message.
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Anneal.Cli.Eval;

public sealed class EndpointException(string message) : Exception(message);

public sealed class OpenAiEndpoint : IDisposable
{
    readonly HttpClient _http;
    public string BaseUrl { get; }

    public OpenAiEndpoint(string baseUrl, string? apiKey)
    {
        BaseUrl = baseUrl.TrimEnd('/');
        _http = new HttpClient { Timeout = TimeSpan.FromMinutes(10) };
        if (apiKey is not null) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
    }

    /// <summary>ft:/fft:/qft: ids and hub-style ids (org/name); callers check first that no such folder exists here.</summary>
    public static bool IsModelId(string value) =>
        value.StartsWith("ft:", StringComparison.Ordinal) || value.StartsWith("fft:", StringComparison.Ordinal) || value.StartsWith("qft:", StringComparison.Ordinal) ||
        (value.Count(c => c == '/') == 1 && !value.StartsWith('.') && !value.StartsWith('/'));

    /// <summary>The default endpoint: the Anneal server's /v1 beside its /api.</summary>
    public static string FromBackend(string apiBase) =>
        (apiBase.TrimEnd('/').EndsWith("/api", StringComparison.Ordinal) ? apiBase.TrimEnd('/')[..^4] : apiBase.TrimEnd('/')) + "/v1";

    public async Task<(string Text, int PromptTokens, int CompletionTokens)> AnswerAsync(string model, JsonArray messages, int maxTokens, CancellationToken ct)
    {
        var url = BaseUrl + "/chat/completions";
        var body = new JsonObject { ["model"] = model, ["messages"] = messages.DeepClone(), ["temperature"] = 0, ["max_tokens"] = maxTokens };
        HttpResponseMessage response;
        try { response = await _http.PostAsJsonAsync(url, body, ct); }
        catch (HttpRequestException e) { throw new EndpointException($"{url}: {e.Message} (is the server running?)"); }
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct);
            JsonNode? json = null;
            try { json = JsonNode.Parse(text); } catch (System.Text.Json.JsonException) { }
            if (!response.IsSuccessStatusCode)
                throw new EndpointException($"{url}: {(int)response.StatusCode} {json?["error"]?["message"]?.GetValue<string>() ?? text}");
            var content = json?["choices"]?[0]?["message"]?["content"]?.GetValue<string>()
                ?? throw new EndpointException($"{url}: the answer has no choices[0].message.content: {text}");
            return (content, json?["usage"]?["prompt_tokens"]?.GetValue<int>() ?? 0, json?["usage"]?["completion_tokens"]?.GetValue<int>() ?? 0);
        }
    }

    public void Dispose() => _http.Dispose();
}
