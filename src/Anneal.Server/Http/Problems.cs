// Problem details (RFC 9457) with a stable `code` and, where it applies,
// `errors: [{line?, field?, message}]`. Handlers return these as typed results. The media type is
// negotiated (ProblemContentNegotiation): `application/problem+json` only when the request's Accept
// names it, else the same body as `application/json`, which clients that parse only JSON read.
using Anneal.Core.Contracts;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Anneal.Server.Http;

/// <summary>Problem codes used only by the HTTP API (job failure codes live in ErrorCodes).</summary>
public static class Problems
{
    public static ProblemHttpResult Make(int status, string code, string title, string detail,
        IReadOnlyList<ErrorItem>? errors = null, IDictionary<string, object?>? extra = null)
    {
        var pd = new ProblemDetails
        {
            Type = $"https://anneal.dev/problems/{code.Replace('_', '-')}",
            Title = title,
            Status = status,
            Detail = detail,
        };
        pd.Extensions["code"] = code;
        if (errors is { Count: > 0 }) pd.Extensions["errors"] = errors.Select(ErrorJson).ToList();
        if (extra is not null) foreach (var (k, v) in extra) pd.Extensions[k] = v;
        return TypedResults.Problem(pd);
    }

    // {line?, field?, message}: absent members are left out rather than written as null.
    static Dictionary<string, object> ErrorJson(ErrorItem e)
    {
        var d = new Dictionary<string, object>();
        if (e.Line is { } l) d["line"] = l;
        if (e.Field is { } f) d["field"] = f;
        d["message"] = e.Message;
        return d;
    }

    /// <summary>The object store failed a request this one needed (502: the fault is upstream of this server).</summary>
    public static ProblemHttpResult ObjectStore(string detail) =>
        Make(502, ErrorCodes.ObjectStore, "Object store error", detail);

    public static ProblemHttpResult NotFound(string what, string id) =>
        Make(404, ErrorCodes.NotFound, "Not found", $"No {what} with id '{id}'.");

    public static ProblemHttpResult BadRequest(string detail, IReadOnlyList<ErrorItem>? errors = null) =>
        Make(400, ErrorCodes.BadRequest, "Bad request", detail, errors);

    public static ProblemHttpResult Validation(string detail, IReadOnlyList<ErrorItem> errors, string code = ErrorCodes.ValidationFailed) =>
        Make(422, code, "Validation failed", detail, errors);

    public static ProblemHttpResult InvalidState(string what, string id, string current, string action) =>
        Make(409, ErrorCodes.InvalidState, "Invalid state",
            $"Cannot {action} {what} '{id}': its status is '{current}'.",
            extra: new Dictionary<string, object?> { ["current_status"] = current });

    public static ProblemHttpResult Unauthorized(string detail) =>
        Make(401, ErrorCodes.Unauthorized, "Unauthorized", detail);

    public static ProblemHttpResult TooLarge(long limit) =>
        Make(413, ErrorCodes.PayloadTooLarge, "Payload too large",
            $"The upload exceeds the server's limit of {limit} bytes (anneal serve --max-upload-mb).",
            extra: new Dictionary<string, object?> { ["max_bytes"] = limit });
}

/// <summary>
/// Sends every problem (ours and the framework's) as <c>application/json</c> unless the request's
/// Accept names <c>application/problem+json</c>: Synth's client parses a body only when its type
/// starts with application/json and otherwise shows an empty response (UPSTREAM.md §8).
/// </summary>
public static class ProblemContentNegotiation
{
    public const string ProblemJson = "application/problem+json";

    public static IApplicationBuilder UseProblemContentNegotiation(this IApplicationBuilder app) =>
        app.Use(async (http, next) =>
        {
            // Headers are still writable in OnStarting, after the handler chose its content type.
            http.Response.OnStarting(() =>
            {
                if (http.Response.ContentType is { } type && type.StartsWith(ProblemJson, StringComparison.OrdinalIgnoreCase)
                    && !AcceptsProblemJson(http.Request))
                    http.Response.ContentType = "application/json; charset=utf-8";
                return Task.CompletedTask;
            });
            await next(http);
        });

    public static bool AcceptsProblemJson(HttpRequest request) =>
        request.Headers.Accept.Any(a => a is not null && a.Contains(ProblemJson, StringComparison.OrdinalIgnoreCase));
}
