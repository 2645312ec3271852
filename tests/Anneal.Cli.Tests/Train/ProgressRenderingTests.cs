// How progress and events are shown: plain lines for logs, and the live line on a terminal.
using System.Text.Json.Nodes;
using Anneal.Cli.Train;
using Anneal.Core.Contracts;
using Spectre.Console;

namespace Anneal.Cli.Tests.Train;

public class ProgressRenderingTests
{
    static readonly DateTimeOffset At = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);

    [Fact]
    public void Progress_events_show_step_loss_throughput_and_eta()
    {
        var data = JsonNode.Parse("""{"step":12,"total_steps":40,"epoch":0.3,"loss":2.34123,"lr":0.0001,"tokens_per_second":1234.4,"eta_seconds":3725}""")!.AsObject();
        var line = JobFollower.FormatPlain(new JobEvent(5, "job_1", EventTypes.Progress, "info", "step 12", data, At));
        Assert.Equal("2026-01-02T03:04:05Z sft.progress step 12/40 · epoch 0.30 · loss 2.3412 · lr 1.0e-4 · 1,234 tok/s · ETA 1:02:05", line);
    }

    [Fact]
    public void Failure_events_show_the_error_code_and_message()
    {
        var data = JsonNode.Parse("""{"error":{"code":"user_data_error","message":"no tokens"}}""")!.AsObject();
        var line = JobFollower.FormatPlain(new JobEvent(9, "job_1", EventTypes.Failed, "error", "Training failed", data, At));
        Assert.Equal("2026-01-02T03:04:05Z sft.failed [error] Training failed (user_data_error: no tokens)", line);
    }

    [Theory]
    [InlineData(0, "0:00")]
    [InlineData(59.6, "1:00")]
    [InlineData(3600, "1:00:00")]
    [InlineData(-1, "?")]
    public void Durations_read_like_clocks(double seconds, string expected) =>
        Assert.Equal(expected, JobFollower.FormatDuration(seconds));

    [Theory]
    [InlineData("checkpoint step 20", 30, 29)]
    [InlineData("a line much longer than the terminal is wide", 20, 19)]
    [InlineData("x", 1, 1)]
    public void Live_lines_fill_the_terminal_width_so_a_redraw_leaves_nothing_behind(string text, int width, int expected)
    {
        var line = JobFollower.PadToWidth(text, width);
        Assert.Equal(expected, line.Length);
        Assert.StartsWith(text[..Math.Min(text.Length, expected)], line);
    }

    [Fact]
    public async Task On_a_terminal_the_follower_uses_the_live_display()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Write("train.toml", Samples.TinyToml());
        box.Write("data.jsonl", Samples.Dataset(3));
        var output = new StringWriter();
        var error = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.Yes,
            ColorSystem = ColorSystemSupport.Standard,
            Interactive = InteractionSupport.Yes,
        });
        var ctx = new CliContext
        {
            Out = output, Error = error, Console = console, IsTerminal = true, WorkingDirectory = box.Dir,
            Environment = new Dictionary<string, string> { ["SYNTH_API_KEY"] = server.ApiKey, ["BACKEND_BASE_URL"] = server.BaseUrl },
        };
        // No trainer: the job stays queued, so the live display runs until the poll timeout.
        var code = await AnnealApp.RunAsync(["train", "--type", "sft", "--config", "train.toml", "--poll-timeout", "1", "--poll-interval", "0.2"], ctx);
        Assert.True(code == 3, output + "\n" + error);
        Assert.Contains("sft.queued", output.ToString());
        Assert.Contains("waiting for the first training step", output.ToString());
    }
}
