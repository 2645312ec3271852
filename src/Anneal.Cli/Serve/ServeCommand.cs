// `anneal serve`: hosts the control plane in this process until Ctrl+C or SIGTERM. Trainer
// processes are this same executable (`anneal trainer run --spec PATH`).
using System.CommandLine;
using Anneal.Server;
using Anneal.Server.Storage;

namespace Anneal.Cli.Serve;

public static class ServeCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var urls = new Option<string>("--urls") { Description = "Address to listen on (port 0 picks a free port)", DefaultValueFactory = _ => "http://127.0.0.1:8000" };
        var maxUpload = new Option<long>("--max-upload-mb") { Description = "Largest dataset upload accepted, in MiB", DefaultValueFactory = _ => 512 };
        var maxJobs = new Option<int>("--max-concurrent-jobs") { Description = "Trainer processes run at the same time; more jobs wait queued (0: none, a control plane for `anneal worker` hosts)", DefaultValueFactory = _ => 1 };
        var leaseSeconds = new Option<double>("--lease-seconds")
        {
            HelpName = "S",
            Description = "How long a running job stays its server's or worker's without a heartbeat before another server re-queues it",
            DefaultValueFactory = _ => 30,
        };
        var modelsDir = new Option<string?>("--models-dir") { Description = "Folder of local Hugging Face model folders, searched first" };
        var gpus = new Option<string?>("--gpus") { HelpName = "0,1,...", Description = "GPU indices for training, one per rank of a job ([compute].gpu_count ranks, default 1; default: train on CPU)" };
        var inferenceGpu = new Option<string?>("--inference-gpu") { HelpName = "N", Description = "GPU index for the inference process behind /v1 (default: inference on CPU); if it is also in --gpus, training and GPU deployments take turns on it" };
        var cpuRanks = new Option<bool>("--cpu-ranks") { Description = "Without --gpus, run a job's [compute].gpu_count > 1 as that many CPU ranks under mpirun (default: one CPU process)" };
        var database = new Option<string?>("--database")
        {
            HelpName = "postgres://user@host:port/db",
            Description = "Store jobs and files' records in this PostgreSQL database, which several servers sharing one data folder can use (default: ANNEAL_DATABASE, else SQLite in the data folder)",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("ANNEAL_DATABASE") is { Length: > 0 } env ? env : null,
        };
        var objectStore = new Option<string?>("--object-store")
        {
            HelpName = "s3://bucket/prefix",
            Description = "Keep uploaded files and job outputs in this S3-compatible bucket, the data folder being this server's cache of it, so servers on one --database need not share a disk (default: ANNEAL_OBJECT_STORE, else the data folder). Endpoint, region and keys: --s3-endpoint, --s3-region, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("ANNEAL_OBJECT_STORE") is { Length: > 0 } env ? env : null,
        };
        var s3Endpoint = new Option<string?>("--s3-endpoint") { HelpName = "URL", Description = "The S3-compatible service of --object-store, e.g. http://minio.internal:9000 (default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS S3)" };
        var s3Region = new Option<string?>("--s3-region") { HelpName = "REGION", Description = "Region of --object-store's bucket (default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1)" };
        var workerToken = new Option<string?>("--worker-token")
        {
            HelpName = "TOKEN",
            Description = "Let `anneal worker` hosts presenting this token run queued jobs (default: ANNEAL_WORKER_TOKEN; none: no workers)",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("ANNEAL_WORKER_TOKEN") is { Length: > 0 } env ? env : null,
        };
        var workerWindow = new Option<double>("--worker-window-hours")
        {
            HelpName = "H",
            Description = "Workers seen within this many hours count when a job's [compute] is checked at creation; a request none of them (nor this server) can meet is refused",
            DefaultValueFactory = _ => 24,
        };
        var offline = new Option<bool>("--offline") { Description = "Never download base models from the Hugging Face Hub; use local folders only" };
        var logFormat = new Option<string>("--log-format") { HelpName = "text|json", Description = "The server's log on stdout: plain text, or one JSON object per line (timestamp, level, category, message, named values)", DefaultValueFactory = _ => "text" };
        var logLevel = new Option<string>("--log-level") { HelpName = "LEVEL", Description = "Least severe log entries shown: debug, information, warning, error", DefaultValueFactory = _ => "warning" };
        var command = new Command("serve", "Run the Anneal server (HTTP API, storage, job runner) until Ctrl+C")
        {
            urls, shared.DataDir, maxUpload, maxJobs, leaseSeconds, modelsDir, gpus, cpuRanks, offline, inferenceGpu, database, objectStore, s3Endpoint, s3Region, workerToken,
            workerWindow, logFormat, logLevel,
        };
        command.SetAction(async (p, ct) =>
        {
            var options = new ServerOptions
            {
                Urls = p.GetValue(urls)!,
                MaxUploadBytes = p.GetValue(maxUpload) * 1024 * 1024,
                MaxConcurrentJobs = p.GetValue(maxJobs),
                LeaseDuration = TimeSpan.FromSeconds(p.GetValue(leaseSeconds)),
                ModelsDir = p.GetValue(modelsDir) is { } m ? ctx.FullPath(m) : null,
                TrainerCommand = ctx.SelfCommand,
                Gpus = (p.GetValue(gpus) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                CpuRanks = p.GetValue(cpuRanks),
                AllowModelDownload = !p.GetValue(offline),
                InferenceGpu = p.GetValue(inferenceGpu),
                Database = p.GetValue(database),
                WorkerToken = p.GetValue(workerToken),
                WorkerWindow = p.GetValue(workerWindow) is var h && h > 0 && h <= MaxWindowHours ? TimeSpan.FromHours(h) : TimeSpan.Zero,
            };
            if (p.GetValue(shared.DataDir) is { } d) options = options with { DataDir = ctx.FullPath(d) };
            if (p.GetValue(objectStore) is { } store)
                options = options with { ObjectStore = new ObjectStoreSettings { Url = store, Endpoint = p.GetValue(s3Endpoint), Region = p.GetValue(s3Region) }.WithEnvironment() };
            else if (p.GetValue(s3Endpoint) is not null || p.GetValue(s3Region) is not null)
            {
                ctx.Error.WriteLine("error: --s3-endpoint and --s3-region describe the bucket of --object-store s3://bucket/prefix, which was not given");
                return ExitCodes.Usage;
            }
            var (format, level) = (p.GetValue(logFormat)!, p.GetValue(logLevel)!);
            if (format is not ("text" or "json"))
            {
                ctx.Error.WriteLine($"error: --log-format {format}: expected text or json");
                return ExitCodes.Usage;
            }
            if (!LogLevels.TryGetValue(level, out var minimum))
            {
                ctx.Error.WriteLine($"error: --log-level {level}: expected one of {string.Join(", ", LogLevels.Keys)}");
                return ExitCodes.Usage;
            }
            options = options with { JsonLogs = format == "json", LogLevel = minimum };
            if (options.WorkerWindow == TimeSpan.Zero)
            {
                ctx.Error.WriteLine($"error: --worker-window-hours {p.GetValue(workerWindow)}: expected a number of hours above 0 and at most {MaxWindowHours} (e.g. 24)");
                return ExitCodes.Usage;
            }
            if (Validate(options) is { } error)
            {
                ctx.Error.WriteLine($"error: {error}");
                return ExitCodes.Usage;
            }
            return await RunAsync(ctx, options, ct);
        });
        return command;
    }

    const double MaxWindowHours = 24 * 365;

    static readonly Dictionary<string, Microsoft.Extensions.Logging.LogLevel> LogLevels = new()
    {
        ["debug"] = Microsoft.Extensions.Logging.LogLevel.Debug, ["information"] = Microsoft.Extensions.Logging.LogLevel.Information,
        ["warning"] = Microsoft.Extensions.Logging.LogLevel.Warning, ["error"] = Microsoft.Extensions.Logging.LogLevel.Error,
    };

    static string? Validate(ServerOptions o)
    {
        if (o.MaxUploadBytes <= 0) return $"--max-upload-mb {o.MaxUploadBytes / 1024 / 1024}: expected a positive number of MiB";
        if (o.MaxConcurrentJobs < 0) return $"--max-concurrent-jobs {o.MaxConcurrentJobs}: expected 0 (no trainers here, only workers) or more";
        if (o.MaxConcurrentJobs == 0 && o.WorkerToken is null) return "--max-concurrent-jobs 0 runs no trainer here: give --worker-token so `anneal worker` hosts run the jobs";
        if (!(o.LeaseDuration.TotalSeconds >= 1)) return $"--lease-seconds {o.LeaseDuration.TotalSeconds}: expected at least 1 (heartbeats come every third of it)";
        foreach (var url in o.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries))
            if (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https"))
                return $"--urls {url}: expected an http:// or https:// address such as http://127.0.0.1:8000";
        if (o.ModelsDir is { } m && !Directory.Exists(m)) return $"--models-dir {m}: folder not found";
        if (o.WorkerToken is { Length: < 16 } token)
            return $"--worker-token: {token.Length} characters is too short to guard every organisation's jobs; use at least 16 (e.g. `openssl rand -hex 16`)";
        if (o.Database is { } db)
        {
            try { Anneal.Server.Storage.DatabaseUrl.ToConnectionString(db); }
            catch (ArgumentException e) { return $"--database: {e.Message}"; }
        }
        if (o.ObjectStore?.Problem() is { } storeProblem) return storeProblem;
        if (o.Gpus.FirstOrDefault(g => !int.TryParse(g, out var i) || i < 0) is { } bad) return $"--gpus: '{bad}' is not a GPU index (expected e.g. 0,1)";
        if (o.InferenceGpu is { } ig && (!int.TryParse(ig, out var n) || n < 0)) return $"--inference-gpu: '{ig}' is not a GPU index (expected e.g. 1)";
        return null;
    }

    public static async Task<int> RunAsync(CliContext ctx, ServerOptions options, CancellationToken ct)
    {
        RunningServer server;
        try
        {
            server = await ServerHost.StartAsync(options, ct);
        }
        catch (ServerStartException e)
        {
            // Port or data folder taken: one line, no stack trace.
            ctx.Error.WriteLine($"error: {e.Message}");
            return ExitCodes.Usage;
        }
        await using var _ = server;
        var store = (options.Database is { } url ? $"; database: {Anneal.Server.Storage.DatabaseUrl.Redact(url)}" : "")
            + (options.ObjectStore is { } objects ? $"; object store: {objects.Url}" : "");
        ctx.Out.WriteLine($"Anneal is listening on {server.BaseUrl} (API: {server.BaseUrl}/api; data: {options.DataDir}{store}).");
        ctx.Out.WriteLine($"Web console: {server.BaseUrl}/ (sign in with an API key)");
        if (server.FirstApiKey is { } key)
        {
            ctx.Out.WriteLine($"Created the first API key: {key}");
            ctx.Out.WriteLine($"  Save it with: anneal setup --api-key {key} --backend {server.BaseUrl}");
        }
        ctx.Out.WriteLine("Press Ctrl+C to stop.");
        try
        {
            await Task.Delay(Timeout.Infinite, ct);
        }
        catch (OperationCanceledException)
        {
            ctx.Out.WriteLine("Stopping ...");
        }
        return ExitCodes.Ok;
    }
}
