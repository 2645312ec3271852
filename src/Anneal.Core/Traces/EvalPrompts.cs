// The prompts file of `anneal eval`: JSONL, one conversation per line, up to the user turn:
//   {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
//    "expected": "4", "metadata": {"topic": "math"}}
// Messages follow the dataset rules (DatasetValidator: roles, content, parts, tool calls), except
// that one message is enough and no assistant reply is needed: the last message must be the user's.
// `expected` (a string, optional) is the reference answer that scores the completion.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;

namespace Anneal.Core.Traces;

public sealed record EvalPrompt(int Line, JsonArray Messages, string? Expected, JsonObject? Metadata);

public sealed record EvalPromptsReport(IReadOnlyList<EvalPrompt> Prompts, IReadOnlyList<ErrorItem> Errors, int TotalErrors)
{
    public bool IsValid => TotalErrors == 0 && Prompts.Count > 0;
}

public static class EvalPrompts
{
    public static readonly IReadOnlyList<string> RecordKeys = ["messages", "expected", "metadata"];

    public static EvalPromptsReport ReadFile(string path, int maxErrorsShown = 20)
    {
        using var stream = File.OpenRead(path);
        return Read(stream, maxErrorsShown);
    }

    public static EvalPromptsReport Read(Stream jsonl, int maxErrorsShown = 20)
    {
        var prompts = new List<EvalPrompt>();
        var errors = new List<ErrorItem>();
        var total = 0;
        void Error(int line, string? field, string message)
        {
            total++;
            if (errors.Count < maxErrorsShown) errors.Add(new ErrorItem(line, field, message));
        }
        try
        {
            foreach (var line in JsonlLines.Read(jsonl))
            {
                if (line.IsBlank) continue;
                var before = total;
                var prompt = ReadLine(line, Error);
                if (prompt != null && total == before) prompts.Add(prompt);
            }
        }
        catch (LineTooLongException e)
        {
            Error(e.Line, null, e.Message);
        }
        if (prompts.Count == 0 && total == 0)
            Error(1, null, "no prompts: expected one JSON object per line with \"messages\" (ending with a user message)");
        return new EvalPromptsReport(prompts, errors, total);
    }

    static EvalPrompt? ReadLine(JsonlLine line, Action<int, string?, string> error)
    {
        var n = line.Number;
        JsonNode? node;
        try { node = JsonNode.Parse(line.Bytes); }
        catch (JsonException ex)
        {
            error(n, null, $"malformed JSON: {JsonlLines.ShortJsonMessage(ex)}");
            return null;
        }
        if (node is not JsonObject record)
        {
            error(n, null, "expected a JSON object with \"messages\" (and optional \"expected\", \"metadata\")");
            return null;
        }
        foreach (var (key, _) in record)
            if (!RecordKeys.Contains(key))
                error(n, key, $"unknown key{Core.Suggest.DidYouMean(key, RecordKeys)}; allowed: {string.Join(", ", RecordKeys)} (put extra fields under \"metadata\")");

        string? expected = null;
        if (record["expected"] is { } e)
        {
            if (e is JsonValue v && v.GetValueKind() == JsonValueKind.String) expected = v.GetValue<string>();
            else error(n, "expected", $"must be a string (the reference answer), got {e.GetValueKind().ToString().ToLowerInvariant()}");
        }
        JsonObject? metadata = null;
        if (record["metadata"] is { } m)
        {
            if (m is JsonObject o) metadata = o;
            else error(n, "metadata", $"must be an object, got {m.GetValueKind().ToString().ToLowerInvariant()}");
        }

        if (record["messages"] is not JsonArray messages)
        {
            error(n, "messages", record.ContainsKey("messages")
                ? "must be a list of {role, content} messages"
                : "required: a list of {role, content} messages ending with the user's turn");
            return null;
        }
        if (messages.Count == 0)
        {
            error(n, "messages", "needs at least 1 message (the user's turn)");
            return null;
        }
        var lastRole = (messages[^1] as JsonObject)?["role"] is JsonValue r && r.GetValueKind() == JsonValueKind.String ? r.GetValue<string>() : null;
        if (lastRole is not null and not "user")
            error(n, $"messages[{messages.Count - 1}].role", $"the last message must be the user's turn (the model answers it), got \"{lastRole}\"");

        // The dataset rules, applied to the prompt plus a placeholder reply: errors name messages[i]
        // exactly as in the prompt, and the "needs an assistant reply" rule is met by the placeholder.
        var probe = new JsonObject
        {
            ["messages"] = new JsonArray([.. messages.Select(x => x?.DeepClone()), new JsonObject { ["role"] = "assistant", ["content"] = "(reply)" }]),
        };
        var report = DatasetValidator.Validate(new MemoryStream(Encoding.UTF8.GetBytes(probe.ToJsonString())), new DatasetValidationOptions(MaxErrorsShown: int.MaxValue));
        foreach (var item in report.Errors) error(n, item.Field, item.Message);
        return new EvalPrompt(n, messages, expected, metadata);
    }
}
