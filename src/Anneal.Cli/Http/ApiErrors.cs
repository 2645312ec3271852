// Turns the client's exceptions into a message on stderr and an exit code, the same way in
// every command: unreachable server and server errors → 1, rejected key or request → 2.
using System.Net;

namespace Anneal.Cli.Http;

public static class ApiErrors
{
    public static int Report(CliContext ctx, Exception e)
    {
        switch (e)
        {
            case BackendUnreachableException u:
                ctx.Error.WriteLine($"error: {u.Message}");
                ctx.Error.WriteLine("  Start a local server with `anneal serve`, or point --backend / BACKEND_BASE_URL at a running one.");
                return ExitCodes.Failed;
            case ApiException { Status: HttpStatusCode.Unauthorized } a:
                ctx.Error.WriteLine($"error: the server at {Host(a)} rejected the API key (401 Unauthorized).");
                ctx.Error.WriteLine("  Check SYNTH_API_KEY (in the environment or .env), or create a key with `anneal setup`.");
                return ExitCodes.Usage;
            case ApiException { Status: HttpStatusCode.NotFound, Title: null } a:
                // Not problem+json: something else answers at this address.
                ctx.Error.WriteLine($"error: {a.Message}");
                ctx.Error.WriteLine($"  {Host(a)} answered 404 without an Anneal error body; is --backend / BACKEND_BASE_URL the Anneal server?");
                return ExitCodes.Failed;
            case ApiException a:
                ctx.Error.WriteLine($"error: {a.Message}");
                foreach (var item in a.Errors.Take(20)) ctx.Error.WriteLine($"  {item}");
                if (a.Errors.Count > 20) ctx.Error.WriteLine($"  ... and {a.Errors.Count - 20} more");
                return (int)a.Status is >= 400 and < 500 and not 404 and not 409 ? ExitCodes.Usage : ExitCodes.Failed;
            default:
                throw new ArgumentException($"not an API error: {e.GetType().Name}", nameof(e), e);
        }
    }

    static string Host(ApiException a) => Uri.TryCreate(a.Url, UriKind.Absolute, out var u) ? $"{u.Scheme}://{u.Authority}" : "the backend";

    /// <summary>True for exceptions <see cref="Report"/> knows how to explain.</summary>
    public static bool IsApiError(Exception e) => e is BackendUnreachableException or ApiException;
}
