// Ctrl+C (and SIGTERM) while a command waits on the server: every command stops with one
// behaviour, "Interrupted." on stderr and exit code 130 (DESIGN.md §4; `serve` alone exits 0,
// since stopping is how a server ends).
namespace Anneal.Cli.Tests.Commands;

public class InterruptTests
{
    [Theory]
    [InlineData("jobs", "events", "{job}", "--follow")]
    [InlineData("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.2")]
    public async Task An_interrupted_command_says_so_and_exits_130(params string[] args)
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(3));
        // A job that stays queued (no trainer), to follow.
        var submitted = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        var jobId = submitted.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();

        var output = new StringWriter();
        var error = new StringWriter();
        var ctx = CliContext.Captured(output, error, box.Dir, box.Environment);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        var code = await AnnealApp.RunAsync([.. args.Select(a => a.Replace("{job}", jobId))], ctx, cts.Token);
        Assert.True(code == ExitCodes.Interrupted, $"exit {code}\n{output}\n{error}");
        Assert.Contains("Interrupted", error.ToString());
    }
}
