// One line of a traces file written by `anneal eval` (snake_case JSON, AnnealJson.Options):
//   {"trace_id": "trace_3f2a…", "model": "out/final", "created_at": "2026-11-24T21:40:00+00:00",
//    "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
//    "completion": "4", "expected": "4", "score": 1.0, "metadata": {...} | null,
//    "usage": {"prompt_tokens": 12, "completion_tokens": 2}, "latency_ms": 35}
// `messages` is the prompt conversation with the generated assistant message appended, so that a
// kept trace is an SFT example as it stands (see TraceFilter).
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Traces;

public sealed record TraceUsage(int PromptTokens, int CompletionTokens);

public sealed record EvalTrace(
    string TraceId,
    string Model,
    DateTimeOffset CreatedAt,
    JsonArray Messages,
    string Completion,
    string? Expected,
    double? Score,
    JsonObject? Metadata,
    TraceUsage Usage,
    long LatencyMs)
{
    public static string NewId() => "trace_" + Guid.NewGuid().ToString("N")[..16];

    public string ToJsonLine() => JsonSerializer.Serialize(this, AnnealJson.Options);
}

/// <summary>Writes JSONL so that readers never see a half-written file: a temporary file next to the
/// target, renamed over it once complete (a failure leaves the old file, if any, as it was).</summary>
public static class AtomicJsonl
{
    public static void Write(string path, IEnumerable<string> lines, Action<string>? checkBeforeRename = null)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var writer = new StreamWriter(temp, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)))
            {
                writer.NewLine = "\n";
                foreach (var line in lines) writer.WriteLine(line);
            }
            checkBeforeRename?.Invoke(temp);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
