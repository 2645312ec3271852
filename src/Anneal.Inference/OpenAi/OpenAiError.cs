// Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the HTTP status
// OpenAI uses (400 bad request, 401 bad key, 404 unknown model, 500 server). Every OpenAI client
// library reads `error.message`.
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;

namespace Anneal.Inference.OpenAi;

public sealed class OpenAiError(int status, string message, string type, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static OpenAiError BadRequest(string message, string? param = null, string? code = null) =>
        new(400, message, "invalid_request_error", param, code);

    public static OpenAiError ModelNotFound(string model) =>
        new(404, $"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error", "model", "model_not_found");

    public static OpenAiError Unauthorized(string message) =>
        new(401, message, "invalid_request_error", null, "invalid_api_key");

    public static OpenAiError Server(string message) => new(500, message, "server_error", null, "internal_error");

    public JsonObject ToJson() => Body(Message, Type, Param, Code);

    public static JsonObject Body(string message, string type, string? param, string? code) => new()
    {
        ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code },
    };

    public Task WriteAsync(HttpResponse response) => Write(response, Status, ToJson());

    public static async Task Write(HttpResponse response, int status, JsonNode body)
    {
        response.StatusCode = status;
        response.ContentType = "application/json";
        await response.WriteAsync(body.ToJsonString());
    }
}
