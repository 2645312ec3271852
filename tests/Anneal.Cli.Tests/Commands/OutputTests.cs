// Output that is read by programs and people alike: lists are tab-separated lines when stdout is
// not a terminal (never wrapped, ids whole), JSON for display keeps < and > readable, and the
// `generate` answer drops Qwen3's empty think block.
using Anneal.Cli.Local;

namespace Anneal.Cli.Tests.Commands;

public class OutputTests
{
    [Fact]
    public async Task Lists_off_a_terminal_are_tab_separated_lines_with_whole_ids()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(4));
        var submitted = await box.RunAsync("train", "--config", "train.toml", "--no-poll");
        Assert.True(submitted.ExitCode == 0, submitted.ToString());
        var jobId = submitted.Out.Split('\n').Single(l => l.StartsWith("job_id: ")).Trim()["job_id: ".Length..];

        var jobs = await box.RunAsync("jobs", "list");
        Assert.True(jobs.ExitCode == 0, jobs.ToString());
        var lines = jobs.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("id\tstatus\tmodel\tprogress\tcreated\tfine_tuned_model", lines[0]);
        Assert.StartsWith($"{jobId}\tqueued\t{Samples.TinyModel}\t", lines[1]);
        Assert.DoesNotContain("│", jobs.Out);

        var models = await box.RunAsync("models");
        Assert.True(models.ExitCode == 0, models.ToString());
        var rows = models.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(rows, r => r.StartsWith("Qwen/Qwen3-VL-30B-A3B-Thinking\tqwen3_vl_moe\t30.5\t262144\tyes\t", StringComparison.Ordinal));
        Assert.All(rows, r => Assert.Equal(6, r.Count(c => c == '\t')));
    }

    [Theory]
    [InlineData("<think>\n\n</think>\n\nParis is the capital of France.\n", "Paris is the capital of France.\n")]
    [InlineData("<think> </think> Paris.", "Paris.")]
    [InlineData("<think>Let me see.</think> Paris.", "<think>Let me see.</think> Paris.")]
    [InlineData("Paris.", "Paris.")]
    public void Generate_drops_only_an_empty_think_block(string answer, string shown) =>
        Assert.Equal(shown, TrainerCommands.WithoutEmptyThink(answer));
}
