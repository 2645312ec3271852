// Turns the client's exceptions into a message on stderr and an exit code, the same way in
// every command: unreachable server and server errors → 1, rejected key or request → 2.
using System.Net;

namespace Anneal.Cli.Http;

public static class ApiErrors
{
    /// <summary>Prints the error; <paramref name="describe"/> formats each listed problem (default: as the server wrote it).</summary>
    /// <paramref name="keySource"/>: where the API key came from (a .env or --env-file path, or "environment").
    public static int Report(CliContext ctx, Exception e, Func<Core.Contracts.ErrorItem, string>? describe = null, string? keySource = null)
    {
        switch (e)
        {
            case BackendUnreachableException u:
                ctx.Error.WriteLine($"error: {u.Message}");
                ctx.Error.WriteLine("  Start a local server with `anneal serve`, or point --backend / BACKEND_BASE_URL at a running one.");
                return ExitCodes.Failed;
            case ApiException { Status: HttpStatusCode.Unauthorized } a:
                ctx.Error.WriteLine($"error: the server at {Host(a)} rejected the API key (401 Unauthorized).");
                ctx.Error.WriteLine(keySource is null || keySource == "environment"
                    ? "  Check SYNTH_API_KEY (in the environment or .env), or create a key with `anneal setup`."
                    : $"  Check SYNTH_API_KEY in {keySource} (the key was read from there), or create a key with `anneal setup`.");
                return ExitCodes.Usage;
            case NoAnnealApiException n:
                ctx.Error.WriteLine($"error: {n.Message}");
                ctx.Error.WriteLine("  Point --backend / BACKEND_BASE_URL at the Anneal server (e.g. http://127.0.0.1:8000).");
                return ExitCodes.Usage;
            case ApiException { Status: HttpStatusCode.NotFound } a when Missing(a.Url) is { } missing:
                // The address is an Anneal server; the id is not one of this organisation's.
                ctx.Error.WriteLine($"error: no {missing.Kind} {missing.Id} in your organisation (404 from {Host(a)}).");
                ctx.Error.WriteLine(missing.Kind == "job" ? "  List your jobs with `anneal jobs list`." : "  List your files with `anneal files list`.");
                return ExitCodes.Usage;
            case ApiException { Status: HttpStatusCode.NotFound, Title: null } a:
                // Not problem+json: something else answers at this address.
                ctx.Error.WriteLine($"error: {a.Message}");
                ctx.Error.WriteLine($"  {Host(a)} answered 404 without an Anneal error body; is --backend / BACKEND_BASE_URL the Anneal server?");
                return ExitCodes.Failed;
            case ApiException a:
                ctx.Error.WriteLine($"error: {a.Message}");
                foreach (var item in a.Errors.Take(20)) ctx.Error.WriteLine($"  {describe?.Invoke(item) ?? item.ToString()}");
                if (a.Errors.Count > 20) ctx.Error.WriteLine($"  ... and {a.Errors.Count - 20} more");
                return (int)a.Status is >= 400 and < 500 and not 404 and not 409 ? ExitCodes.Usage : ExitCodes.Failed;
            default:
                throw new ArgumentException($"not an API error: {e.GetType().Name}", nameof(e), e);
        }
    }

    /// <summary>
    /// A 413 for an upload: "data.jsonl is 3.1 MiB; the server accepts at most 1 MiB (anneal serve
    /// --max-upload-mb)", exit 2 (nothing was stored). Other errors as <see cref="Report"/>.
    /// </summary>
    public static int ReportUpload(CliContext ctx, Exception e, string fileName, long bytes)
    {
        if (e is not ApiException { Status: HttpStatusCode.RequestEntityTooLarge } a) return Report(ctx, e);
        var limit = a.Problem?["max_bytes"] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<long>(out var max) ? max : (long?)null;
        ctx.Error.WriteLine($"error: {fileName} is {MiB(bytes)}; the server accepts at most {(limit is { } l ? MiB(l) : "less")} (anneal serve --max-upload-mb).");
        ctx.Error.WriteLine("  Nothing was stored. Split the dataset, upload fewer records (--examples N), or raise the server's limit.");
        return ExitCodes.Usage;
    }

    /// <summary>3251234 → "3.1 MiB", 1048576 → "1 MiB".</summary>
    public static string MiB(long bytes) =>
        (bytes / (1024.0 * 1024)).ToString("0.#", System.Globalization.CultureInfo.InvariantCulture) + " MiB";

    /// <summary>".../learning/jobs/job_x/events?..." → ("job", "job_x"); null for other URLs.</summary>
    static (string Kind, string Id)? Missing(string url)
    {
        foreach (var (segment, kind) in new[] { ("/learning/jobs/", "job"), ("/learning/files/", "file") })
        {
            var at = url.IndexOf(segment, StringComparison.Ordinal);
            if (at < 0) continue;
            var id = url[(at + segment.Length)..].Split('/', '?')[0];
            if (id.Length > 0) return (kind, Uri.UnescapeDataString(id));
        }
        return null;
    }

    static string Host(ApiException a) => Uri.TryCreate(a.Url, UriKind.Absolute, out var u) ? $"{u.Scheme}://{u.Authority}" : "the backend";

    /// <summary>True for exceptions <see cref="Report"/> knows how to explain.</summary>
    public static bool IsApiError(Exception e) => e is BackendUnreachableException or ApiException or NoAnnealApiException;
}
