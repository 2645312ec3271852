// Links into the web console that `anneal serve` hosts at `/` (src/Anneal.Server/WebConsole).
// Pages are addressed by the URL fragment (#/jobs/ID), which browsers never send to the server.
namespace Anneal.Cli.Jobs;

public static class ConsoleLink
{
    /// <summary>"http://host:8000/api" → "http://host:8000/" (the console lives beside the API).</summary>
    public static string Home(string apiBaseUrl)
    {
        var root = apiBaseUrl.TrimEnd('/');
        if (root.EndsWith("/api", StringComparison.Ordinal)) root = root[..^"/api".Length];
        return root + "/";
    }

    /// <summary>The job's page: "http://host:8000/#/jobs/job_…".</summary>
    public static string ForJob(string apiBaseUrl, string jobId) => Home(apiBaseUrl) + "#/jobs/" + Uri.EscapeDataString(jobId);
}
