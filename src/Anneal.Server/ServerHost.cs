// Builds and runs the control plane. TODO(server): implement. Signatures agreed with the CLI.
namespace Anneal.Server;

public sealed record ServerOptions
{
    /// <summary>e.g. "http://127.0.0.1:8000"; "http://127.0.0.1:0" picks a free port.</summary>
    public string Urls { get; init; } = "http://127.0.0.1:8000";
    /// <summary>Database, files, job folders, models. Default ~/.anneal.</summary>
    public string DataDir { get; init; } = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".anneal");
    public long MaxUploadBytes { get; init; } = 512L * 1024 * 1024;
    /// <summary>Command prefix that starts a trainer process; "trainer run --spec PATH" is appended.</summary>
    public IReadOnlyList<string> TrainerCommand { get; init; } = [];
    public int MaxConcurrentJobs { get; init; } = 1;
    /// <summary>Folder of local Hugging Face model folders searched first (DESIGN §7).</summary>
    public string? ModelsDir { get; init; }
}

public static class ServerHost
{
    /// <summary>Starts the server; returns once it listens. Dispose to stop gracefully.</summary>
    public static Task<RunningServer> StartAsync(ServerOptions options, CancellationToken ct = default) =>
        throw new NotImplementedException("ServerHost.StartAsync");
}

public sealed class RunningServer : IAsyncDisposable
{
    /// <summary>The base address it listens on, e.g. "http://127.0.0.1:45123" (no /api).</summary>
    public required string BaseUrl { get; init; }
    /// <summary>The key printed on first start (null when keys already existed).</summary>
    public string? FirstApiKey { get; init; }
    public required Func<ValueTask> Stop { get; init; }
    public ValueTask DisposeAsync() => Stop();
}
