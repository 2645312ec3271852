// Builds and runs the control plane (eShop Catalog.API style: wiring only; each resource maps
// its own endpoints). Start order: lock the data folder (one server per folder), open the database
// (migrations) and the object store (if any), sweep tmp/ and orphaned blobs, ensure a first API key, recover jobs interrupted by a previous stop or crash, then
// listen. A taken data folder or listen address throws ServerStartException (one readable line).
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Deployments;
using Anneal.Server.WebConsole;
using Anneal.Server.Workers;
using Anneal.Server.Events;
using Anneal.Server.Export;
using Anneal.Server.Files;
using Anneal.Server.Hosting;
using Anneal.Server.Inference;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Metrics;
using Anneal.Server.Models;
using Anneal.Server.Operations;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Anneal.Server;

public sealed record ServerOptions
{
    /// <summary>e.g. "http://127.0.0.1:8000"; "http://127.0.0.1:0" picks a free port.</summary>
    public string Urls { get; init; } = "http://127.0.0.1:8000";
    /// <summary>Database, files, job folders, models. Default ~/.anneal.</summary>
    public string DataDir { get; init; } = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".anneal");
    public long MaxUploadBytes { get; init; } = 512L * 1024 * 1024;
    /// <summary>Command prefix that starts a trainer process; "trainer run --spec PATH" is appended. Empty: jobs stay queued.</summary>
    public IReadOnlyList<string> TrainerCommand { get; init; } = [];
    public int MaxConcurrentJobs { get; init; } = 1;
    /// <summary>Folder of local Hugging Face model folders searched first (DESIGN §7).</summary>
    public string? ModelsDir { get; init; }
    /// <summary>GPU indices handed out one per running job via CUDA_VISIBLE_DEVICES; empty = CPU (CUDA_VISIBLE_DEVICES="").</summary>
    public IReadOnlyList<string> Gpus { get; init; } = [];
    /// <summary>Without GPUs, a job's [compute].gpu_count > 1 runs as that many CPU ranks (mpirun) instead of one process (tests, development).</summary>
    public bool CpuRanks { get; init; }
    /// <summary>How long a trainer has after SIGTERM (cancel, shutdown) before it is killed.</summary>
    public TimeSpan CancelGracePeriod { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A job found `running` after a restart is re-queued at most this many times, then failed (server_restarted).</summary>
    public int MaxJobRestarts { get; init; } = 3;
    /// <summary>Download a base model missing locally from the Hub (HF_ENDPOINT, HF_TOKEN) before its job runs.</summary>
    public bool AllowModelDownload { get; init; } = true;
    /// <summary>Minimum level of the server's console log.</summary>
    public LogLevel LogLevel { get; init; } = LogLevel.Warning;
    /// <summary>The console log as plain text, or one JSON object per line (timestamp, level, category, message and its named values) for log collectors.</summary>
    public bool JsonLogs { get; init; }
    /// <summary>/v1 goes to this running inference server instead of a process started here (tests, remote GPU hosts).</summary>
    public string? InferenceUrl { get; init; }
    /// <summary>The key of <see cref="InferenceUrl"/>.</summary>
    public string? InferenceKey { get; init; }
    /// <summary>GPU index given to the inference process (and never to a training job); null: inference on CPU.</summary>
    public string? InferenceGpu { get; init; }
    /// <summary>Sequences the inference process decodes together per model.</summary>
    public int InferenceMaxBatch { get; init; } = 8;
    /// <summary>Limits and address rules for https images fetched while an upload is validated.</summary>
    public Files.ImageFetchSettings ImageFetch { get; init; } = new();
    /// <summary>A postgres://user@host:port/db URL: a store several servers share (with one shared data folder). Null: SQLite in the data folder.</summary>
    public string? Database { get; init; }
    /// <summary>How long a running job stays this server's without a heartbeat; then another server re-queues it (shared store).</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>
    /// An S3-compatible bucket that keeps uploaded files and job outputs (`--object-store s3://bucket/prefix`);
    /// the data folder is then this server's own cache of it. Null: the data folder is the store.
    /// </summary>
    public ObjectStoreSettings? ObjectStore { get; init; }
    /// <summary>The bearer token `anneal worker` hosts present on /api/workers; null: no workers (the endpoints answer 404).</summary>
    public string? WorkerToken { get; init; }
    /// <summary>Workers seen (registered, claimed, heartbeat) within this window count when job creation checks that a job's [compute] can run somewhere.</summary>
    public TimeSpan WorkerWindow { get; init; } = TimeSpan.FromHours(24);
}

public static class ServerHost
{
    /// <summary>
    /// Starts the server; returns once it listens. Dispose to stop gracefully. Throws
    /// <see cref="ServerStartException"/> when the data folder is used by another server or the
    /// address is already in use.
    /// </summary>
    public static async Task<RunningServer> StartAsync(ServerOptions options, CancellationToken ct = default)
    {
        // One server per data folder protects the SQLite store; servers sharing a PostgreSQL
        // database share the folder too and coordinate through job leases instead, unless an
        // object store holds the files: then each server's folder is its own cache, locked as well.
        IDisposable? dataLock = SharesDataFolder(options) ? null : DataDirLock.Acquire(options.DataDir);
        try { return await StartLockedAsync(options, dataLock, ct); }
        catch
        {
            dataLock?.Dispose();
            throw;
        }
    }

    /// <summary>Several servers on one PostgreSQL database keep their files in one data folder (no object store).</summary>
    static bool SharesDataFolder(ServerOptions options) => options.Database is not null && options.ObjectStore is null;

    /// <summary>Connects to the bucket and lists it once, so a wrong endpoint, bucket or key stops the start with the store's own answer.</summary>
    static async Task OpenObjectStore(Db db, ObjectStoreSettings settings, CancellationToken ct)
    {
        S3ObjectStore store;
        try { store = S3ObjectStore.Create(settings); }
        catch (ArgumentException e)
        {
            db.Dispose();
            throw new ServerStartException(e.Message, e);
        }
        try { await store.CheckAsync(ct); }
        catch (ObjectStoreException e)
        {
            store.Dispose();
            db.Dispose();
            throw new ServerStartException($"--object-store {store.Name}: cannot use the bucket: {e.Message}", e);
        }
        db.Objects = store;
    }

    static async Task<RunningServer> StartLockedAsync(ServerOptions options, IDisposable? dataLock, CancellationToken ct)
    {
        if (options.Database is null && DatabaseUrl.Recorded(options.DataDir) is { } recorded)
            throw new ServerStartException(
                $"data folder {Path.GetFullPath(options.DataDir)} belongs to the database {DatabaseUrl.Redact(recorded)} ({DatabaseUrl.RecordPath(options.DataDir)}); start with --database, or remove that file to give the folder its own SQLite store");
        Db db;
        try { db = Db.Open(options.DataDir, options.Database); }
        catch (Exception e) when (options.Database is not null && e is System.Data.Common.DbException or ArgumentException or System.Net.Sockets.SocketException or TimeoutException)
        {
            throw new ServerStartException($"database {DatabaseUrl.Redact(options.Database)}: {e.Message}", e);
        }
        if (options.Database is not null) DatabaseUrl.Record(options.DataDir, options.Database);
        if (options.ObjectStore is { } objectStore) await OpenObjectStore(db, objectStore, ct);
        StartupSweep.Run(db, SharesDataFolder(options));
        ObjectStoreBackfill.Result backfill;
        try { backfill = await ObjectStoreBackfill.RunAsync(db, ct); }
        catch (ObjectStoreException e)
        {
            var name = db.Objects.Name;
            db.Dispose();
            throw new ServerStartException($"--object-store {name}: copying this data folder's files into the bucket failed (the next start tries again): {e.Message}", e);
        }
        var firstKey = ApiKeys.EnsureFirstKey(db);
        Recovery.RequeueInterrupted(db, options);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = typeof(ServerHost).Assembly.GetName().Name });
        builder.WebHost.UseUrls(options.Urls);
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxUploadBytes + 1024 * 1024);
        builder.Logging.SetMinimumLevel(options.LogLevel);
        if (options.JsonLogs)
        {
            builder.Logging.ClearProviders();
            builder.Logging.AddJsonConsole(j => { j.UseUtcTimestamp = true; j.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ"; });
        }
        // A failed start is reported once, by ServerStartException, not also as a logged stack trace.
        var listening = false;
        // (A filter rule replaces the minimum level, so it checks the level itself.)
        builder.Logging.AddFilter((category, level) => level >= options.LogLevel && (listening || category != "Microsoft.Extensions.Hosting.Internal.Host"));
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.CancelGracePeriod + TimeSpan.FromSeconds(15));
        builder.Services.ConfigureHttpJsonOptions(j =>
        {
            j.SerializerOptions.PropertyNamingPolicy = AnnealJson.Options.PropertyNamingPolicy;
            j.SerializerOptions.DictionaryKeyPolicy = AnnealJson.Options.DictionaryKeyPolicy;
            j.SerializerOptions.DefaultIgnoreCondition = AnnealJson.Options.DefaultIgnoreCondition;
        });
        // Framework-made problems (unknown route, wrong method, unhandled exception) get a `code` too.
        builder.Services.AddProblemDetails(p => p.CustomizeProblemDetails = c =>
        {
            c.ProblemDetails.Extensions.TryAdd("code", c.ProblemDetails.Status switch
            {
                404 => ErrorCodes.NotFound,
                405 => "method_not_allowed",
                >= 500 => ErrorCodes.Internal,
                _ => "bad_request",
            });
            c.ProblemDetails.Detail ??= $"{c.ProblemDetails.Title ?? "Error"}: {c.HttpContext.Request.Method} {c.HttpContext.Request.Path}";
        });
        builder.Services.AddSingleton(db);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton<JobSignals>();
        builder.Services.AddSingleton<FileProcessingQueue>();
        builder.Services.AddHostedService<FileProcessingWorker>();
        builder.Services.AddSingleton<Runner.RankRendezvousStore>();
        builder.Services.AddSingleton<JobScheduler>();
        builder.Services.AddSingleton<OperationsCounters>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<JobScheduler>());
        builder.Services.AddSingleton<InferenceSupervisor>();
        builder.Services.AddSingleton<InferenceDevices>();

        var app = builder.Build();
        if (backfill.Files + backfill.Folders > 0)
            app.Logger.LogInformation("Copied {Files} files and {Folders} folders of the data folder into the object store {Store}", backfill.Files, backfill.Folders, db.Objects.Name);
        foreach (var skipped in backfill.Skipped)
            app.Logger.LogWarning("Not copied into the object store {Store}: {Object}", db.Objects.Name, skipped);
        app.UseProblemContentNegotiation();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        // /api/v1/… answers like /api/…: Synth's status commands normalise a base URL to /api/v1.
        foreach (var prefix in new[] { "/api", "/api/v1" })
        {
            app.MapGet(prefix + "/health", () => TypedResults.Ok(new { status = "ok" }));
            var api = app.MapGroup(prefix).AddEndpointFilter(ApiKeys.Require);
            api.MapFilesApi();
            api.MapJobsApi();
            api.MapEventsApi();
            api.MapMetricsApi();
            api.MapModelsApi();
            api.MapDeploymentsApi();
            api.MapModelExportApi();
            api.MapKeysApi();
        }
        app.MapWorkersApi();
        app.MapOperationsApi();
        app.MapV1Api();
        app.MapRankRendezvousApi();   // the ranks of a multi-rank job meet here (its own token, not an API key)
        app.MapConsole();
        // Before the scheduler starts: "gpu" deployments left loading or ready keep a shared GPU from jobs.
        app.Services.GetRequiredService<InferenceDevices>().Restore();

        try { await app.StartAsync(ct); }
        catch (IOException e) when (e.InnerException is AddressInUseException)
        {
            await app.DisposeAsync();
            var addresses = options.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(u => Uri.TryCreate(u, UriKind.Absolute, out var uri) ? uri.Authority : u);
            throw new ServerStartException(
                $"address {string.Join(", ", addresses)} is already in use (another anneal serve?); pick another with --urls", e);
        }
        listening = true;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        ServerAddressFile.Write(options.DataDir, address.TrimEnd('/'));
        // Stopping twice (Stop, then Dispose) stops once.
        var stop = new Lazy<Task>(async () =>
        {
            await app.StopAsync();
            await app.DisposeAsync();
            db.Dispose();
            dataLock?.Dispose();
        });
        return new RunningServer
        {
            BaseUrl = address.TrimEnd('/'),
            FirstApiKey = firstKey,
            Stop = () => new ValueTask(stop.Value),
        };
    }
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
