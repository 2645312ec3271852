// The settings a command sees: `.env` in the working directory, then each --env-file in order on
// top, then the process environment, which wins (DESIGN.md §4). Also resolves the backend URL and
// the API key from those values.
namespace Anneal.Cli.Env;

public sealed class CliEnvironment
{
    public const string ApiKeyVariable = "SYNTH_API_KEY";
    public const string BackendVariable = "BACKEND_BASE_URL";
    public const string LegacyBackendVariable = "SYNTH_BACKEND_URL";
    public const string DefaultBackend = "http://127.0.0.1:8000";

    readonly Dictionary<string, string> _values;
    readonly Dictionary<string, string> _sources;

    CliEnvironment(Dictionary<string, string> values, Dictionary<string, string> sources)
    {
        _values = values;
        _sources = sources;
    }

    public string? Get(string key) => _values.TryGetValue(key, out var v) && v.Length > 0 ? v : null;

    /// <summary>Where a value came from: a file path, or "environment".</summary>
    public string? SourceOf(string key) => _sources.GetValueOrDefault(key);

    /// <summary>Loads the layers; a missing --env-file or a malformed line is an error.</summary>
    public static (CliEnvironment? Env, List<string> Errors) Load(CliContext ctx, IReadOnlyList<string>? envFiles)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        var errors = new List<string>();

        void Layer(string path)
        {
            var (fileValues, fileErrors) = DotEnv.Parse(File.ReadAllText(path), path);
            errors.AddRange(fileErrors.Select(e => e.ToString()));
            foreach (var (k, v) in fileValues)
            {
                values[k] = v;
                sources[k] = path;
            }
        }

        var dotenv = Path.Combine(ctx.WorkingDirectory, ".env");
        if (File.Exists(dotenv)) Layer(dotenv);
        foreach (var file in envFiles ?? [])
        {
            var path = ctx.FullPath(file);
            if (File.Exists(path)) Layer(path);
            else errors.Add($"--env-file {file}: file not found ({path})");
        }
        foreach (var (k, v) in ctx.Environment)
        {
            values[k] = v;
            sources[k] = "environment";
        }
        return errors.Count > 0 ? (null, errors) : (new CliEnvironment(values, sources), errors);
    }

    /// <summary>--backend, else BACKEND_BASE_URL, else SYNTH_BACKEND_URL, else the local default.</summary>
    public string BackendBaseUrl(string? backendOption) =>
        NormalizeApiBase(backendOption ?? Get(BackendVariable) ?? Get(LegacyBackendVariable) ?? DefaultBackend);

    public string? ApiKey => Get(ApiKeyVariable);

    /// <summary>"http://host:8000" and "http://host:8000/api/" both become "http://host:8000/api".</summary>
    public static string NormalizeApiBase(string url)
    {
        var trimmed = url.Trim().TrimEnd('/');
        return trimmed.EndsWith("/api", StringComparison.OrdinalIgnoreCase) ? trimmed : trimmed + "/api";
    }

    /// <summary>Checks that a backend URL is an absolute http(s) URL; returns an error message otherwise.</summary>
    public static string? CheckBackendUrl(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? null
            : $"backend URL '{(url.EndsWith("/api", StringComparison.Ordinal) ? url[..^4] : url)}' is not an absolute http:// or https:// URL (e.g. http://127.0.0.1:8000)";
}
