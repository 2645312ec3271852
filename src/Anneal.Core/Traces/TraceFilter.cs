// `anneal filter`: traces (see EvalTrace.cs) → an SFT dataset, one record per kept trace:
//   {"messages": [... the trace's conversation, ending with the generated assistant message ...],
//    "metadata": {"trace_id": "trace_…", "score": 0.8, "source_model": "out/final"}}
// Rules, in this order: a line that is not a usable trace (bad JSON, missing trace_id/messages, a
// score outside [0, 1], messages the dataset validator rejects) is reported with its line number and
// skipped; with a minimum score, traces with a lower or a null score are dropped; traces whose
// answer is empty are dropped (nothing to learn); then the first MaxExamples survivors, in file
// order, are kept. Every kept record passes DatasetValidator.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;

namespace Anneal.Core.Traces;

/// <param name="MinScore">Keep traces with score ≥ this; null keeps every score, null included.</param>
/// <param name="MaxExamples">Keep at most this many (the first ones in file order).</param>
/// <param name="SourceModel">metadata.source_model of every record; null takes each trace's "model".</param>
/// <param name="CorrectWithExpected">a trace below MinScore that has an `expected` answer is kept with that answer
/// as the assistant reply (metadata.corrected = true): supervised correction, so a weak model still gets a signal.</param>
public sealed record TraceFilterOptions(double? MinScore = null, int? MaxExamples = null, string? SourceModel = null, bool CorrectWithExpected = false);

public sealed record TraceFilterResult(
    IReadOnlyList<JsonObject> Records,
    int TracesRead,
    IReadOnlyDictionary<string, int> Dropped,
    IReadOnlyList<ErrorItem> BadLines,
    int TotalBadLines)
{
    public int Kept => Records.Count;
}

public static class TraceFilter
{
    public const string BelowMinScore = "score below --min-score";
    public const string NoScore = "no score (no expected answer) with --min-score";
    public const string EmptyAnswer = "empty answer";
    public const string OverMaxExamples = "over --max-examples";

    public static TraceFilterResult Filter(Stream traces, TraceFilterOptions options, int maxBadLinesShown = 20)
    {
        var records = new List<JsonObject>();
        var dropped = new Dictionary<string, int>();
        var bad = new List<ErrorItem>();
        var totalBad = 0;
        var read = 0;
        void Bad(int line, string? field, string message)
        {
            totalBad++;
            if (bad.Count < maxBadLinesShown) bad.Add(new ErrorItem(line, field, message));
        }
        void Drop(string reason) => dropped[reason] = dropped.GetValueOrDefault(reason) + 1;

        try
        {
            foreach (var line in JsonlLines.Read(traces))
            {
                if (line.IsBlank) continue;
                read++;
                var parsed = Parse(line, Bad);
                if (parsed is not { } t) continue;
                if (options.MinScore is { } min && t.Score is null) Drop(NoScore);
                else if (options.MinScore is { } m && t.Score < m && options.CorrectWithExpected && t.Expected is { Length: > 0 } expected)
                {
                    if (options.MaxExamples is { } cap && records.Count >= cap) Drop(OverMaxExamples);
                    else records.Add(Corrected(t, expected, options.SourceModel));
                }
                else if (options.MinScore is { } m2 && t.Score < m2) Drop(BelowMinScore);
                else if (string.IsNullOrWhiteSpace(TraceScoring.WithoutReasoning(t.Answer))) Drop(EmptyAnswer);
                else if (options.MaxExamples is { } max && records.Count >= max) Drop(OverMaxExamples);
                else records.Add(ToSftRecord(t, options.SourceModel));
            }
        }
        catch (LineTooLongException e)
        {
            Bad(e.Line, null, e.Message + " (the rest of the file was not read)");
        }
        return new TraceFilterResult(records, read, dropped, bad, totalBad);
    }

    readonly record struct ParsedTrace(string TraceId, string? Model, JsonArray Messages, string Answer, double? Score, string? Expected);

    static ParsedTrace? Parse(JsonlLine line, Action<int, string?, string> bad)
    {
        var n = line.Number;
        JsonNode? node;
        try { node = JsonNode.Parse(line.Bytes); }
        catch (JsonException e)
        {
            bad(n, null, $"malformed JSON: {JsonlLines.ShortJsonMessage(e)}");
            return null;
        }
        if (node is not JsonObject trace)
        {
            bad(n, null, "expected a trace object {trace_id, messages, score, ...} as written by `anneal eval`");
            return null;
        }
        var ok = true;
        if (String(trace["trace_id"]) is not { Length: > 0 } id)
        {
            bad(n, "trace_id", "required: a non-empty string");
            ok = false;
            id = "";
        }
        var model = trace["model"] is null ? null : String(trace["model"]);
        if (trace["model"] is not null && model is null)
        {
            bad(n, "model", "must be a string");
            ok = false;
        }
        double? score = null;
        if (trace["score"] is JsonValue s)
        {
            if (s.GetValueKind() != JsonValueKind.Number || !s.TryGetValue<double>(out var v) || v is < 0 or > 1 || double.IsNaN(v))
            {
                bad(n, "score", $"must be a number in [0, 1] or null, got {s.ToJsonString()}");
                ok = false;
            }
            else score = v;
        }
        else if (trace["score"] is not null)
        {
            bad(n, "score", $"must be a number in [0, 1] or null, got {trace["score"]!.GetValueKind().ToString().ToLowerInvariant()}");
            ok = false;
        }
        if (trace["messages"] is not JsonArray messages)
        {
            bad(n, "messages", "required: the conversation with the generated assistant message last");
            return null;
        }
        var last = messages.Count > 0 ? messages[^1] as JsonObject : null;
        if (last?["role"] is not JsonValue r || r.GetValueKind() != JsonValueKind.String || r.GetValue<string>() != "assistant")
        {
            bad(n, "messages", "the last message must be the generated assistant reply (role \"assistant\")");
            return null;
        }
        // The answer is the last message's text (a string, or the text parts of a list).
        var answer = last["content"] switch
        {
            JsonValue c when c.GetValueKind() == JsonValueKind.String => c.GetValue<string>(),
            JsonArray parts => string.Concat(parts.OfType<JsonObject>().Select(p => String(p["text"]) ?? "")),
            _ => "",
        };
        // An empty answer is its own drop reason (counted by the caller), not a malformed trace:
        // validate the rest with a placeholder reply.
        var probe = new JsonObject { ["messages"] = messages.DeepClone() };
        if (string.IsNullOrWhiteSpace(answer) && probe["messages"]![messages.Count - 1] is JsonObject reply && reply["tool_calls"] is null)
            reply["content"] = "(empty)";
        var report = DatasetValidator.Validate(new MemoryStream(Encoding.UTF8.GetBytes(probe.ToJsonString())), new DatasetValidationOptions(MaxErrorsShown: 3));
        foreach (var e in report.Errors) bad(n, e.Field, $"not a valid SFT example: {e.Message}");
        if (report.TotalErrors > 0) ok = false;
        return ok ? new ParsedTrace(id, model, messages, answer, score, String(trace["expected"])) : null;
    }

    static string? String(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    static JsonObject ToSftRecord(ParsedTrace t, string? sourceModel) => new()
    {
        ["messages"] = t.Messages.DeepClone(),
        ["metadata"] = new JsonObject
        {
            ["trace_id"] = t.TraceId,
            ["score"] = t.Score,
            ["source_model"] = sourceModel ?? t.Model,
        },
    };

    /// <summary>The trace with its reply replaced by the expected answer.</summary>
    static JsonObject Corrected(ParsedTrace t, string expected, string? sourceModel)
    {
        var record = ToSftRecord(t, sourceModel);
        var messages = record["messages"]!.AsArray();
        messages[^1] = new JsonObject { ["role"] = "assistant", ["content"] = expected };
        record["metadata"]!["corrected"] = true;
        return record;
    }

    /// <summary>Writes the records as a dataset, atomically; the finished file is validated before it
    /// replaces the target (an invalid one would be a bug here, and throws InvalidDataException).</summary>
    public static void WriteDataset(string path, IEnumerable<JsonObject> records) =>
        AtomicJsonl.Write(path, records.Select(r => r.ToJsonString(AnnealJson.Options)), temp =>
        {
            var report = DatasetValidator.ValidateFile(temp);
            if (!report.IsValid)
                throw new InvalidDataException($"the filtered dataset does not validate: {string.Join("; ", report.Errors.Select(e => $"line {e.Line}: {e.Field}: {e.Message}"))}");
        });
}
