// Test helpers: run `anneal` in-process with captured output in a temporary working directory,
// and start a real server (Kestrel on a loopback port, a temporary data folder, SQLite in it or,
// with ANNEAL_TEST_DATABASE=postgres, a PostgreSQL database of its own: Shared/TestStore.cs).
using Anneal.Cli;
using Anneal.Cli.Http;
using Anneal.Server;

namespace Anneal.Cli.Tests;

public sealed record CliResult(int ExitCode, string Out, string Err)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Out}\n--- stderr ---\n{Err}";
}

/// <summary>A temporary working directory with an environment, in which commands run.</summary>
public sealed class CliSandbox : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("anneal-cli-test-").FullName;
    public Dictionary<string, string> Environment { get; } = new();

    public string Write(string relativePath, string text)
    {
        var path = Path.Combine(Dir, relativePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    public async Task<CliResult> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var ctx = CliContext.Captured(output, error, Dir, Environment);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var code = await AnnealApp.RunAsync(args, ctx, cts.Token);
        return new CliResult(code, output.ToString(), error.ToString());
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>A real Anneal server for one test; TrainerCommand empty unless jobs must run.</summary>
public sealed class TestServer : IAsyncDisposable
{
    public required RunningServer Server { get; init; }
    public required string DataDir { get; init; }
    public required string ApiKey { get; init; }
    public string BaseUrl => Server.BaseUrl;

    public static async Task<TestServer> StartAsync(bool runJobs = false, int maxConcurrentJobs = 1, string? dataDir = null, string urls = "http://127.0.0.1:0",
        long maxUploadBytes = 512L * 1024 * 1024, IReadOnlyList<string>? trainerCommand = null, IReadOnlySet<string>? imageTestHosts = null,
        string? inferenceUrl = null)
    {
        dataDir ??= Directory.CreateTempSubdirectory("anneal-cli-server-").FullName;
        var server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = urls,
            DataDir = dataDir,
            TrainerCommand = trainerCommand ?? (runJobs ? CliContext.SelfCommandOfThisProcess() : []),
            MaxUploadBytes = maxUploadBytes,
            MaxConcurrentJobs = maxConcurrentJobs,
            CancelGracePeriod = TimeSpan.FromSeconds(10),
            AllowModelDownload = false, // tests never reach for the network
            // https images from these hosts (a loopback TLS server in the test) are fetched on any address, certificate unchecked.
            ImageFetch = new Anneal.Server.Files.ImageFetchSettings { TestHosts = imageTestHosts ?? new HashSet<string>() },
            InferenceUrl = inferenceUrl,
            InferenceKey = inferenceUrl is null ? null : "test-inference-key",
            Database = TestStore.DatabaseFor(dataDir),
        });
        // FirstApiKey is null when keys already existed (a data dir prepared by `anneal setup`).
        return new TestServer { Server = server, DataDir = dataDir, ApiKey = server.FirstApiKey ?? "" };
    }

    public AnnealClient Client() => new(BaseUrl + "/api", ApiKey);

    public async Task<int> FileCountAsync()
    {
        using var c = Client();
        return (await c.ListFilesAsync(100, CancellationToken.None)).Data.Count;
    }

    public async Task<int> JobCountAsync()
    {
        using var c = Client();
        return (await c.ListJobsAsync(null, 100, CancellationToken.None)).Jobs.Count;
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        try { Directory.Delete(DataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Small valid and invalid inputs in the spec's formats.</summary>
public static class Samples
{
    public const string TinyModel = "anneal/tiny-qwen3";

    /// <summary>The spec's TOML (synth-sft-training.md §1) verbatim.</summary>
    public const string SpecToml = """
        [job]
        model = "Qwen/Qwen3-4B"  # base model you want to fine-tune
        data = "ft_data/crafter_sft.jsonl"
        poll_seconds = 1800

        [compute]
        gpu_type = "H100"
        gpu_count = 4
        nodes = 1

        [training]
        mode = "full_finetune"
        use_qlora = false

        [hyperparameters]
        n_epochs = 2
        per_device_batch = 2
        gradient_accumulation_steps = 64
        learning_rate = 8e-6
        warmup_ratio = 0.03
        """;

    /// <summary>A config the tiny model trains in a few seconds.</summary>
    public static string TinyToml(int steps = 8, string data = "data.jsonl") => $"""
        [job]
        model = "{TinyModel}"
        data = "{data}"

        [training]
        mode = "full_finetune"

        [hyperparameters]
        total_steps = {steps}
        per_device_batch = 2
        learning_rate = 1e-3
        sequence_length = 64
        """;

    public static string Record(int i) =>
        $$"""{"messages":[{"role":"user","content":"What is {{i}} plus 1?"},{"role":"assistant","content":"{{i + 1}}."}]}""";

    public static string Dataset(int n) => string.Join("\n", Enumerable.Range(0, n).Select(Record)) + "\n";
}
