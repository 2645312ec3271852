// The trainer's stdout protocol: one TrainerEvent JSON line per event (AnnealJson.Options), flushed
// at once so the server sees progress live. Diagnostics go to stderr.
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training;

public sealed class TrainerEvents(TextWriter stdout, TextWriter stderr)
{
    readonly object gate = new();

    public TextWriter Diagnostics => stderr;

    public void Emit(string type, string message, JsonObject? data = null, string level = "info")
    {
        var line = JsonSerializer.Serialize(new TrainerEvent(type, level, message, data), AnnealJson.Options);
        lock (gate)
        {
            stdout.WriteLine(line);
            stdout.Flush();
        }
    }

    public void Log(string message)
    {
        lock (gate)
        {
            stderr.WriteLine(message);
            stderr.Flush();
        }
    }
}
