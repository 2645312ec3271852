// The CLI's way into the web console: the job's console URL when a command starts following it,
// and `jobs get --plot` against a real server (a job with no points yet; an unknown job).
namespace Anneal.Cli.Tests.Jobs;

public class ConsoleCommandsTests
{
    static async Task<(CliSandbox Box, TestServer Server, string JobId)> CancelledJobAsync()
    {
        var server = await TestServer.StartAsync();
        var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml(2));
        box.Write("data.jsonl", Samples.Dataset(4));
        var submitted = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        var id = submitted.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();
        var cancelled = await box.RunAsync("jobs", "cancel", id);
        Assert.True(cancelled.ExitCode == 0, cancelled.ToString());
        return (box, server, id);
    }

    [Fact]
    public async Task Following_a_job_prints_its_console_url_first()
    {
        var (box, server, id) = await CancelledJobAsync();
        await using var _ = server;
        using var __ = box;
        var follow = await box.RunAsync("jobs", "events", id, "--follow", "--poll-interval", "0.2");
        Assert.StartsWith($"Watch it in the console: {server.BaseUrl}/#/jobs/{id}", follow.Out);
    }

    [Fact]
    public async Task Jobs_get_plot_says_when_no_loss_is_recorded_and_names_the_console_page()
    {
        var (box, server, id) = await CancelledJobAsync();
        await using var _ = server;
        using var __ = box;
        var get = await box.RunAsync("jobs", "get", id, "--plot");
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Contains($"console: {server.BaseUrl}/#/jobs/{id}", get.Out);
        Assert.EndsWith("No loss recorded yet.", get.Out.TrimEnd());

        var json = await box.RunAsync("jobs", "get", id, "--plot", "--json");
        Assert.True(json.ExitCode == 0, json.ToString());
        Assert.StartsWith("{", json.Out.TrimStart());
        Assert.Contains("No loss recorded yet.", json.Err);
    }

    [Fact]
    public async Task Jobs_get_plot_of_an_unknown_job_fails_naming_it()
    {
        var (box, server, _) = await CancelledJobAsync();
        await using var s = server;
        using var b = box;
        var get = await box.RunAsync("jobs", "get", "job_nope", "--plot");
        Assert.Equal(2, get.ExitCode);
        Assert.Contains("error: no job job_nope in your organisation", get.Err);
    }
}
