// `anneal train --no-poll` re-run after the recorded job failed or was cancelled: a new job is
// submitted (the server keeps one copy of the dataset), and the user is told so.
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Train;

public class ResubmitTests
{
    static readonly string[] Command = ["train", "--config", "train.toml", "--dataset", "data.jsonl", "--no-poll"];

    static string JobId(CliResult r) => r.Out.Split('\n').Single(l => l.StartsWith("job_id: ")).Trim()["job_id: ".Length..];

    [Fact]
    public async Task After_a_cancelled_job_a_re_run_submits_a_new_one()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(4));

        var first = await box.RunAsync(Command);
        Assert.True(first.ExitCode == 0, first.ToString());
        var firstId = JobId(first);
        var cancel = await box.RunAsync("jobs", "cancel", firstId);
        Assert.True(cancel.ExitCode == 0, cancel.ToString());

        var second = await box.RunAsync(Command);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains($"previous job {firstId} cancelled; submitting a new job", second.Err);
        Assert.NotEqual(firstId, JobId(second));
        Assert.Equal(2, await server.JobCountAsync());
        Assert.Equal(1, await server.FileCountAsync());

        // The new job is now the recorded one: a third run reports it.
        var third = await box.RunAsync(Command);
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Contains($"already submitted as job {JobId(second)}", third.Err);
        Assert.Equal(2, await server.JobCountAsync());
    }

    [Fact]
    public async Task After_a_failed_job_a_re_run_submits_a_new_one()
    {
        // A "trainer" that exits at once without an event: the server marks the job failed.
        await using var server = await TestServer.StartAsync(trainerCommand: ["false"]);
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(4));

        var first = await box.RunAsync(Command);
        Assert.True(first.ExitCode == 0, first.ToString());
        var firstId = JobId(first);
        using (var client = server.Client())
        {
            for (var i = 0; i < 200 && (await client.GetJobAsync(firstId, default)).Status != JobStatus.Failed; i++) await Task.Delay(100);
            Assert.Equal(JobStatus.Failed, (await client.GetJobAsync(firstId, default)).Status);
        }

        var second = await box.RunAsync(Command);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains($"previous job {firstId} failed; submitting a new job", second.Err);
        Assert.NotEqual(firstId, JobId(second));
        Assert.Equal(1, await server.FileCountAsync());
    }
}
