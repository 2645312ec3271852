// Follows a job to a terminal state: GET …/events?since_seq= and GET …/jobs/{id} every poll
// interval. On a terminal: one live line (step/total, bar, loss, tokens/s, ETA) with the other
// events printed above it. Otherwise (CI logs, tests): one timestamped line per event.
// A server that goes away for a while (restart) is waited for, up to RetryWindow.
using System.Globalization;
using System.Text.Json.Nodes;
using Anneal.Cli.Http;
using Anneal.Core.Contracts;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Anneal.Cli.Train;

public sealed record FollowResult(JobObject? Job, bool TimedOut);

public sealed class JobFollower(CliContext ctx, AnnealClient client, TimeSpan interval, TimeSpan? timeout)
{
    /// <summary>Where plain event lines go: stdout, or stderr when stdout is kept for JSON.</summary>
    public TextWriter? EventWriter { get; init; }

    /// <summary>How long an unreachable or failing server is retried before giving up.</summary>
    public TimeSpan RetryWindow { get; init; } = TimeSpan.FromSeconds(90);

    long _since;
    ProgressData? _lastProgress;

    public async Task<FollowResult> FollowAsync(string jobId, CancellationToken ct)
    {
        (EventWriter ?? ctx.Out).WriteLine($"Watch it in the console: {Jobs.ConsoleLink.ForJob(client.BaseUrl, jobId)}");
        if (!ctx.IsTerminal || EventWriter is not null) return await LoopAsync(jobId, Print, () => { }, ct);
        FollowResult result = new(null, false);
        var live = ctx.Console.Live(new Markup(Markup.Escape($"waiting for job {jobId} ..."))).AutoClear(false);
        await live.StartAsync(async display =>
        {
            result = await LoopAsync(jobId, e =>
            {
                if (e.Type != EventTypes.Progress) ctx.Console.MarkupLine(Markup.Escape(PadToWidth(FormatPlain(e), ctx.Console.Profile.Width)));
            }, () => display.UpdateTarget(LiveLine()), ct);
        });
        return result;
    }

    void Print(JobEvent e) => (EventWriter ?? ctx.Out).WriteLine(FormatPlain(e));

    async Task<FollowResult> LoopAsync(string jobId, Action<JobEvent> onEvent, Action refresh, CancellationToken ct)
    {
        var started = DateTimeOffset.UtcNow;
        DateTimeOffset? failingSince = null;
        JobObject? job = null;
        while (true)
        {
            try
            {
                var terminal = false;
                job = await client.GetJobAsync(jobId, ct);
                terminal = JobStatus.IsTerminal(job.Status);
                // Read events after the status, so a terminal status is followed by its last events.
                await DrainEventsAsync(jobId, onEvent, ct);
                refresh();
                failingSince = null;
                if (terminal) return new FollowResult(job, false);
            }
            catch (Exception e) when (IsTransient(e))
            {
                failingSince ??= DateTimeOffset.UtcNow;
                if (DateTimeOffset.UtcNow - failingSince > RetryWindow) throw;
                ctx.Error.WriteLine($"warning: {e.Message}; retrying");
            }
            if (timeout is { } t && DateTimeOffset.UtcNow - started >= t) return new FollowResult(job, true);
            await Task.Delay(interval, ct);
        }
    }

    async Task DrainEventsAsync(string jobId, Action<JobEvent> onEvent, CancellationToken ct)
    {
        while (true)
        {
            var page = await client.GetEventsAsync(jobId, _since, 500, ct);
            foreach (var e in page.Events)
            {
                if (e.Seq <= _since) continue;
                _since = e.Seq;
                if (e.Type == EventTypes.Progress) _lastProgress = EventData.Read<ProgressData>(e.Data) ?? _lastProgress;
                onEvent(e);
            }
            if (page.Events.Count < 500) return;
        }
    }

    static bool IsTransient(Exception e) =>
        e is BackendUnreachableException || e is ApiException { Status: >= System.Net.HttpStatusCode.InternalServerError };

    IRenderable LiveLine()
    {
        if (_lastProgress is not { } p) return new Markup("[grey]waiting for the first training step ...[/]");
        var (step, total) = (p.Step, p.TotalSteps);
        var text = ProgressText(p);
        // The bar takes what the line leaves of the terminal's width, at most 30 columns.
        var width = (int)Math.Clamp(ctx.Console.Profile.Width - text.Length - 2, 0, 30);
        if (width < 10) width = 0; // no room for a useful bar: numbers only
        var filled = total > 0 ? (int)Math.Clamp(width * step / total, 0, width) : 0;
        var bar = new string('━', filled) + new string('─', width - filled);
        var line = PadToWidth(text, ctx.Console.Profile.Width - (width == 0 ? 0 : width + 1));
        return new Markup(width == 0 ? Markup.Escape(line) : $"[green]{bar}[/] {Markup.Escape(line)}");
    }

    /// <summary>
    /// Pads a line of the live display to the terminal's width (or cuts it there): a redraw then
    /// overwrites every column of the longer line it replaces, so no characters of it are left
    /// behind ("checkpoint step 20ss 4.87"), and a line never wraps into the next.
    /// </summary>
    public static string PadToWidth(string text, int width)
    {
        var columns = Math.Max(1, width - 1); // the last column would move the cursor to the next line
        return text.Length >= columns ? text[..columns] : text.PadRight(columns);
    }

    /// <summary>"step 12/40 · loss 2.3412 · 1,234 tok/s · ETA 0:42"</summary>
    public static string ProgressText(ProgressData p)
    {
        var parts = new List<string>
        {
            $"step {p.Step}/{p.TotalSteps}",
            $"epoch {p.Epoch.ToString("0.00", CultureInfo.InvariantCulture)}",
            $"loss {p.Loss.ToString("0.0000", CultureInfo.InvariantCulture)}",
            $"lr {p.Lr.ToString("0.0e+0", CultureInfo.InvariantCulture)}",
        };
        if (p.TokensPerSecond is { } tps) parts.Add($"{tps.ToString("#,0", CultureInfo.InvariantCulture)} tok/s");
        if (p.EtaSeconds is { } eta) parts.Add($"ETA {FormatDuration(eta)}");
        return string.Join(" · ", parts);
    }

    public static string FormatPlain(JobEvent e)
    {
        var time = e.CreatedAt.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        var text = e.Type switch
        {
            EventTypes.Progress when EventData.Read<ProgressData>(e.Data) is { } p => ProgressText(p),
            EventTypes.Failed when e.Data?["error"] is JsonObject err => $"{e.Message} ({err["code"]}: {err["message"]})",
            _ => e.Message,
        };
        var level = e.Level is "info" or "" ? "" : $" [{e.Level}]";
        return $"{time} {e.Type}{level} {text}".TrimEnd();
    }

    public static string FormatDuration(double seconds)
    {
        if (double.IsNaN(seconds) || seconds < 0) return "?";
        var t = TimeSpan.FromSeconds(Math.Round(seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}" : $"{t.Minutes}:{t.Seconds:00}";
    }
}
