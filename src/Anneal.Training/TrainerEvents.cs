// The trainer's stdout protocol: one TrainerEvent JSON line per event (AnnealJson.Options), flushed
// at once so the server sees progress live. Diagnostics go to stderr, which the server keeps as
// the job's trainer.log (GET …/logs, error.log_tail): every event but routine progress is echoed
// there as one line ("2026-01-02T03:04:05Z sft.failed [error] <message>"), progress every 10th
// step, so the log tells the story of a run even when it fails before the model loads.
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training;

public sealed class TrainerEvents(TextWriter stdout, TextWriter stderr)
{
    readonly object gate = new();
    // Once the server is gone its pipes are broken; the run then ends at the next step boundary
    // (ServerWatch) with a checkpoint, so events nobody can read are dropped rather than fatal.
    bool stdoutBroken, stderrBroken;

    public TextWriter Diagnostics => stderr;

    public void Emit(string type, string message, JsonObject? data = null, string level = "info")
    {
        var line = JsonSerializer.Serialize(new TrainerEvent(type, level, message, data), AnnealJson.Options);
        lock (gate)
        {
            if (!stdoutBroken)
                try
                {
                    stdout.WriteLine(line);
                    stdout.Flush();
                }
                catch (IOException) { stdoutBroken = true; }
        }
        if (type != EventTypes.Progress || IsMilestoneStep(data))
        {
            var time = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture);
            Log($"{time} {type}{(level == "info" ? "" : $" [{level}]")} {message}");
        }
    }

    static bool IsMilestoneStep(JsonObject? data) =>
        data?["step"] is JsonValue v && v.TryGetValue<int>(out var step)
        && (step == 1 || step % 10 == 0 || (data["total_steps"] is JsonValue t && t.TryGetValue<int>(out var total) && step == total));

    public void Log(string message)
    {
        lock (gate)
        {
            if (!stderrBroken)
                try
                {
                    stderr.WriteLine(message);
                    stderr.Flush();
                }
                catch (IOException) { stderrBroken = true; }
        }
    }
}
