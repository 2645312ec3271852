// What the worker tests share: a server that runs no trainer itself, so its jobs wait for workers
// (on the test store: PostgreSQL when ANNEAL_TEST_DATABASE=postgres), a CLI sandbox pointed at it,
// and `anneal train --no-poll` of the sandbox's train.toml and data.jsonl, answering the job id.
using Anneal.Cli.Tests.EndToEnd;
using Anneal.Server;

namespace Anneal.Cli.Tests.Worker;

public sealed class WorkerBed : IAsyncDisposable
{
    public const string Token = "test-worker-token";
    public required RunningServer Server { get; init; }
    public required CliSandbox Box { get; init; }
    public required string DataDir { get; init; }

    /// <param name="configure">Changes to the server's options (a shorter lease, a bucket).</param>
    public static async Task<WorkerBed> StartAsync(Func<ServerOptions, ServerOptions>? configure = null)
    {
        var dataDir = Directory.CreateTempSubdirectory("anneal-cli-server-").FullName;
        var options = new ServerOptions
        {
            Urls = "http://127.0.0.1:0", DataDir = dataDir, WorkerToken = Token, AllowModelDownload = false, Database = TestStore.DatabaseFor(dataDir),
        };
        var server = await ServerHost.StartAsync(configure is null ? options : configure(options));
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.FirstApiKey!;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        return new WorkerBed { Server = server, Box = box, DataDir = dataDir };
    }

    /// <summary>Submits train.toml with data.jsonl (written in the sandbox) without following the job; its id.</summary>
    public async Task<string> SubmitAsync()
    {
        var submitted = await Box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--dataset", "data.jsonl", "--no-poll");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        return submitted.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();
    }

    public async ValueTask DisposeAsync()
    {
        Box.Dispose();
        await Server.DisposeAsync();
    }
}
