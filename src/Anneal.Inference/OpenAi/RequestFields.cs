// Reading and checking the fields of an OpenAI request body, one clear 400 per bad field that
// names the field, the value and what is allowed (`temperature 3 is out of range: expected 0 to 2`).
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Inference.Engine;
using Microsoft.AspNetCore.Http;

namespace Anneal.Inference.OpenAi;

/// <summary>The request settings shared by /v1/chat/completions and /v1/completions.</summary>
/// <param name="MaxTokens">null: up to the model's context length.</param>
/// <param name="IgnoreEos">vLLM's extension: generate max_tokens tokens whatever the model says (benchmarks).</param>
public sealed record CommonSettings(string Model, SamplingParams Sampling, int? MaxTokens, int N, IReadOnlyList<string> Stop, bool Stream, bool IncludeUsage, bool IgnoreEos = false);

public static class RequestFields
{
    public const int MaxChoices = 16;
    public const int MaxStopSequences = 4;

    public static async Task<JsonObject> ReadBodyAsync(HttpRequest request)
    {
        try
        {
            var node = await JsonNode.ParseAsync(request.Body, cancellationToken: request.HttpContext.RequestAborted);
            return node as JsonObject ?? throw OpenAiError.BadRequest("The request body must be a JSON object.");
        }
        catch (JsonException e)
        {
            throw OpenAiError.BadRequest($"The request body is not valid JSON: {e.Message}");
        }
    }

    public static CommonSettings Common(JsonObject body)
    {
        var model = String(body, "model") ?? throw OpenAiError.BadRequest("you must provide a model parameter", "model");
        var temperature = Number(body, "temperature") ?? 1.0;
        if (temperature is < 0 or > 2) throw OpenAiError.BadRequest($"temperature {temperature} is out of range: expected a number from 0 to 2", "temperature");
        var topP = Number(body, "top_p") ?? 1.0;
        if (topP is <= 0 or > 1) throw OpenAiError.BadRequest($"top_p {topP} is out of range: expected a number greater than 0 and at most 1", "top_p");
        var topK = (int)(Integer(body, "top_k") ?? 0);
        if (topK < -1) throw OpenAiError.BadRequest($"top_k {topK} is out of range: expected -1 or 0 (off) or a positive number", "top_k");
        var seed = Integer(body, "seed");
        var maxTokens = Integer(body, "max_completion_tokens") ?? Integer(body, "max_tokens");
        if (maxTokens > int.MaxValue) maxTokens = int.MaxValue;
        var maxName = body.ContainsKey("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        if (maxTokens is < 1) throw OpenAiError.BadRequest($"{maxName} {maxTokens} is out of range: expected a positive number", maxName);
        var n = Integer(body, "n") ?? 1;
        if (n is < 1 or > MaxChoices) throw OpenAiError.BadRequest($"n {n} is out of range: expected 1 to {MaxChoices}", "n");

        var stop = body["stop"] switch
        {
            null => [],
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
            JsonArray a when a.All(x => x is JsonValue s && s.GetValueKind() == JsonValueKind.String) => a.Select(x => x!.GetValue<string>()).ToList(),
            _ => throw OpenAiError.BadRequest("stop must be a string or a list of strings", "stop"),
        };
        if (stop.Count > MaxStopSequences) throw OpenAiError.BadRequest($"stop has {stop.Count} sequences: at most {MaxStopSequences} are allowed", "stop");
        if (stop.Any(s => s.Length == 0)) throw OpenAiError.BadRequest("stop sequences must not be empty", "stop");

        var stream = Bool(body, "stream") ?? false;
        var includeUsage = false;
        if (body["stream_options"] is JsonObject so) includeUsage = Bool(so, "include_usage", "stream_options.include_usage") ?? false;
        else if (body["stream_options"] is { } other && other.GetValueKind() != JsonValueKind.Null)
            throw OpenAiError.BadRequest("stream_options must be an object", "stream_options");

        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
            if (Number(body, penalty) is { } p && p != 0)
                throw OpenAiError.BadRequest($"{penalty} {p} is not supported: only 0 is", penalty);
        if (Bool(body, "logprobs") == true || body["top_logprobs"] is JsonValue)
            throw OpenAiError.BadRequest("logprobs are not supported", "logprobs");
        if (body["logit_bias"] is JsonObject bias && bias.Count > 0)
            throw OpenAiError.BadRequest("logit_bias is not supported", "logit_bias");

        return new CommonSettings(model, new SamplingParams(temperature, topP, topK < 0 ? 0 : topK, seed), (int?)maxTokens, (int)n, stop, stream, includeUsage, Bool(body, "ignore_eos") ?? false);
    }

    public static string? String(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
        var other => throw OpenAiError.BadRequest($"{name} must be a string, got {other.GetValueKind().ToString().ToLowerInvariant()}", name),
    };

    public static double? Number(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
        var other => throw OpenAiError.BadRequest($"{name} must be a number, got {other.ToJsonString()}", name),
    };

    public static long? Integer(JsonObject o, string name)
    {
        var d = Number(o, name);
        if (d is null) return null;
        if (d != Math.Floor(d.Value) || Math.Abs(d.Value) > long.MaxValue / 2.0)
            throw OpenAiError.BadRequest($"{name} must be an integer, got {d}", name);
        return (long)d.Value;
    }

    public static bool? Bool(JsonObject o, string name, string? param = null) => o[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
        var other => throw OpenAiError.BadRequest($"{param ?? name} must be true or false, got {other.ToJsonString()}", param ?? name),
    };

}
