// JSONL chat dataset validation (DESIGN.md §6), shared by the server (while an upload streams),
// the CLI (before upload) and the trainer. One record per line:
//   {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..." | [parts],
//                  "tool_calls"?: [...], "tool_call_id"?: "...", "name"?: "...", "reasoning_content"?: "..."}, ...],
//    "tools"?: [...], "metadata"?: {...}, "images"?: [...], "image_url"?: ...}   (last two: legacy vision)
// parts: {"type": "text", "text": "..."} | {"type": "image_url", "image_url": {"url": "..."}}
// Errors read `Line N: messages[1].role: ...`; the first MaxErrorsShown are kept, all are counted.
// The rules are stated once, here, on a parsed document (RecordChecker); DatasetCheck streams the
// bytes and sends here only the lines its allocation-free scan (RecordScan) cannot prove valid.
using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using Anneal.Core.Contracts;

namespace Anneal.Core.Datasets;

/// <param name="LocalImagePaths">
/// Whether an image url may be a path relative to the dataset's folder: true only where the files
/// are at hand and are packed with the dataset (the CLI before an upload, a local training run).
/// The server refuses them: an uploaded JSONL carries no files, and a path would name whatever
/// sits beside it in the server's storage.
/// </param>
public sealed record DatasetValidationOptions(int MaxErrorsShown = 20, bool Vision = false, int MaxImagesPerMessage = 1, bool LocalImagePaths = false);

/// <summary>
/// Result of validating a dataset: Errors holds at most MaxErrorsShown, TotalErrors counts all.
/// NumExamples counts non-blank lines; ExamplesWithImages those with image parts or legacy images.
/// </summary>
public sealed record DatasetReport(int NumExamples, IReadOnlyList<ErrorItem> Errors, int TotalErrors, int ExamplesWithImages = 0)
{
    public bool IsValid => TotalErrors == 0 && NumExamples > 0;
}

public static class DatasetValidator
{
    public static readonly IReadOnlyList<string> Roles = ["system", "user", "assistant", "tool"];
    public static readonly IReadOnlyList<string> RecordKeys = ["messages", "tools", "metadata", "images", "image_url"];
    public static readonly IReadOnlyList<string> MessageKeys = ["role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content"];
    public static readonly IReadOnlyList<string> PartTypes = ["text", "image_url"];

    internal const string NoExamples = "the dataset has no examples: the file is empty or holds only blank lines; expected one JSON object with \"messages\" per line";

    /// <summary>Validates a JSONL stream in one pass without holding it whole in memory.</summary>
    public static DatasetReport Validate(Stream jsonl, DatasetValidationOptions? options = null)
    {
        using var check = new DatasetCheck(options);
        check.ReadFrom(jsonl);
        return check.Complete();
    }

    public static DatasetReport ValidateFile(string path, DatasetValidationOptions? options = null)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        return Validate(stream, options);
    }

    /// <summary>
    /// The same verdict with every line parsed into a document and checked by the rules (the way
    /// every line was validated before DatasetCheck): the reference the fast scan is tested and
    /// benchmarked against.
    /// </summary>
    public static DatasetReport ValidateByDocument(Stream jsonl, DatasetValidationOptions? options = null)
    {
        options ??= new DatasetValidationOptions();
        var sink = new ErrorSink(options.MaxErrorsShown);
        int examples = 0, withImages = 0;
        try
        {
            foreach (var line in JsonlLines.Read(jsonl))
            {
                if (line.IsBlank) continue;
                examples++;
                if (CheckLine(line.Number, line.Bytes, options, sink)) withImages++;
            }
        }
        catch (LineTooLongException e)
        {
            sink.Add(new ErrorItem(e.Line, null, $"longer than {JsonlLines.MaxLineBytes / (1024 * 1024)} MiB; one example per line is expected"));
        }
        if (examples == 0 && sink.Total == 0)
            sink.Add(new ErrorItem(null, null, NoExamples));
        return new DatasetReport(examples, sink.Shown, sink.Total, withImages);
    }

    /// <summary>Number of non-blank lines (records), read as a stream.</summary>
    public static int CountExamples(Stream jsonl) => JsonlLines.Read(jsonl).Count(l => !l.IsBlank);

    /// <summary>
    /// Copies the first <paramref name="count"/> non-blank records of a JSONL file to a new file
    /// (the CLI's --examples N), without the BOM and blank lines. Returns how many were written.
    /// </summary>
    public static int TakeFirst(string inputPath, int count, string outputPath)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        using var input = File.OpenRead(inputPath);
        using var output = File.Create(outputPath);
        var written = 0;
        foreach (var line in JsonlLines.Read(input))
        {
            if (written >= count) break;
            if (line.IsBlank) continue;
            output.Write(line.Bytes);
            output.WriteByte((byte)'\n');
            written++;
        }
        return written;
    }

    /// <summary>Checks one non-blank line by the rules; true when the record carries images (valid or not).</summary>
    internal static bool CheckLine(int n, ReadOnlyMemory<byte> bytes, DatasetValidationOptions options, ErrorSink sink)
    {
        if (!Utf8.IsValid(bytes.Span))
        {
            sink.Add(new ErrorItem(n, null, $"invalid UTF-8 at byte {FirstInvalidUtf8(bytes.Span) + 1} of the line; save the file as UTF-8"));
            return false;
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            var where = e.BytePositionInLine is { } b ? $" at byte {b + 1}" : "";
            sink.Add(new ErrorItem(n, null, $"malformed JSON{where}: {JsonlLines.ShortJsonMessage(e)}"));
            return false;
        }
        using (doc)
        {
            // Only a \u escape can spell a lone surrogate: most lines skip the walk.
            if (bytes.Span.IndexOf("\\u"u8) >= 0 && JsonUnicode.FirstInvalid(doc.RootElement) is { } bad)
            {
                sink.Add(new ErrorItem(n, bad.Length == 0 ? null : bad, JsonUnicode.Problem));
                return false;
            }
            var checker = new RecordChecker(n, options, sink);
            checker.Check(doc.RootElement);
            return checker.SawImages;
        }
    }

    static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        var i = 0;
        while (i < bytes.Length)
        {
            if (System.Text.Rune.DecodeFromUtf8(bytes[i..], out _, out var consumed) != OperationStatus.Done) return i;
            i += consumed;
        }
        return i;
    }

    internal sealed class ErrorSink(int maxShown)
    {
        public List<ErrorItem> Shown { get; } = [];
        public int Total { get; private set; }

        public void Add(ErrorItem e)
        {
            Total++;
            if (Shown.Count < maxShown) Shown.Add(e);
        }
    }

    /// <summary>The rules for one parsed record; every problem is reported, not only the first.</summary>
    sealed class RecordChecker(int line, DatasetValidationOptions options, ErrorSink sink)
    {
        /// <summary>The record has image parts or legacy images (errors for a text-only model).</summary>
        public bool SawImages { get; private set; }

        void Error(string? field, string message) => sink.Add(new ErrorItem(line, field, message));

        public void Check(JsonElement record)
        {
            if (record.ValueKind != JsonValueKind.Object)
            {
                Error(null, $"expected a JSON object with \"messages\", got {Kind(record)}");
                return;
            }
            foreach (var p in record.EnumerateObject())
                if (!RecordKeys.Contains(p.Name))
                    Error(p.Name, $"unknown key{Core.Suggest.DidYouMean(p.Name, RecordKeys)}; allowed: {string.Join(", ", RecordKeys)} (put extra fields under \"metadata\")");

            if (!record.TryGetProperty("messages", out var messages))
                Error("messages", "required: a list of {role, content} messages");
            else if (messages.ValueKind != JsonValueKind.Array)
                Error("messages", $"must be a list of messages, got {Kind(messages)}");
            else
                CheckMessages(messages);

            if (record.TryGetProperty("tools", out var tools)) CheckTools(tools);
            if (record.TryGetProperty("metadata", out var metadata) && metadata.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                Error("metadata", $"must be an object, got {Kind(metadata)}");
            CheckLegacyImages(record);
        }

        void CheckMessages(JsonElement messages)
        {
            var count = messages.GetArrayLength();
            if (count < 2)
                Error("messages", $"needs at least 2 messages (a prompt and an assistant reply), got {count}");
            var assistants = 0;
            var toolCallIds = new HashSet<string>();
            var i = 0;
            foreach (var m in messages.EnumerateArray())
            {
                var role = CheckMessage(m, $"messages[{i}]", toolCallIds);
                if (role == "assistant") assistants++;
                i++;
            }
            if (count >= 2 && assistants == 0)
                Error("messages", "needs at least one message with role \"assistant\" (the reply the model learns)");
        }

        /// <summary>Checks one message and returns its role (null when the role is bad).</summary>
        string? CheckMessage(JsonElement m, string path, HashSet<string> toolCallIds)
        {
            if (m.ValueKind != JsonValueKind.Object)
            {
                Error(path, $"must be an object with \"role\" and \"content\", got {Kind(m)}");
                return null;
            }
            foreach (var p in m.EnumerateObject())
                if (!MessageKeys.Contains(p.Name))
                    Error($"{path}.{p.Name}", $"unknown key{Core.Suggest.DidYouMean(p.Name, MessageKeys)}; allowed: {string.Join(", ", MessageKeys)}");

            string? role = null;
            if (!m.TryGetProperty("role", out var r))
                Error($"{path}.role", $"required: one of {Quoted(Roles)}");
            else if (r.ValueKind != JsonValueKind.String || !Roles.Contains(r.GetString()))
                Error($"{path}.role", $"must be one of {Quoted(Roles)}, got {Value(r)}{(r.ValueKind == JsonValueKind.String ? Core.Suggest.DidYouMean(r.GetString()!, Roles) : "")}");
            else
                role = r.GetString();

            var hasToolCalls = m.TryGetProperty("tool_calls", out var toolCalls) && toolCalls.ValueKind != JsonValueKind.Null;
            if (hasToolCalls)
            {
                if (role is not null and not "assistant")
                    Error($"{path}.tool_calls", $"only assistant messages may have tool_calls, this one has role \"{role}\"");
                else
                    CheckToolCalls(toolCalls, $"{path}.tool_calls", toolCallIds);
            }

            var hasContent = m.TryGetProperty("content", out var content) && content.ValueKind != JsonValueKind.Null;
            if (!hasContent)
            {
                if (!(role == "assistant" && hasToolCalls))
                    Error($"{path}.content", role == "assistant"
                        ? "required: a string or a list of parts (it may be null or absent only when the message has tool_calls)"
                        : "required: a string or a list of parts");
            }
            else
                CheckContent(content, $"{path}.content", role, hasToolCalls);

            if (m.TryGetProperty("tool_call_id", out var callId))
            {
                if (role is not null and not "tool")
                    Error($"{path}.tool_call_id", $"only tool messages carry tool_call_id, this one has role \"{role}\"");
                else if (callId.ValueKind != JsonValueKind.String)
                    Error($"{path}.tool_call_id", $"must be a string, got {Kind(callId)}");
                else if (!toolCallIds.Contains(callId.GetString()!))
                    Error($"{path}.tool_call_id", $"\"{callId.GetString()}\" does not match the id of any earlier tool call"
                        + (toolCallIds.Count > 0 ? $" (known: {Quoted(toolCallIds)})" : " (no assistant tool_calls precede it)"));
            }
            foreach (var key in new[] { "name", "reasoning_content" })
                if (m.TryGetProperty(key, out var s) && s.ValueKind is not (JsonValueKind.String or JsonValueKind.Null))
                    Error($"{path}.{key}", $"must be a string, got {Kind(s)}");
            return role;
        }

        void CheckContent(JsonElement content, string path, string? role, bool hasToolCalls)
        {
            // An empty prompt or reply teaches nothing (an assistant turn that only calls tools may be empty).
            var mustHaveText = role is "user" || (role is "assistant" && !hasToolCalls);
            if (content.ValueKind == JsonValueKind.String)
            {
                if (mustHaveText && string.IsNullOrWhiteSpace(content.GetString()))
                    Error(path, $"must not be empty: a {role} message needs text");
                return;
            }
            if (content.ValueKind != JsonValueKind.Array)
            {
                Error(path, $"must be a string or a list of parts ({{\"type\": \"text\", \"text\": ...}} or {{\"type\": \"image_url\", \"image_url\": {{\"url\": ...}}}}), got {Kind(content)}");
                return;
            }
            if (mustHaveText && content.GetArrayLength() == 0)
                Error(path, $"must not be an empty list: a {role} message needs at least one part");
            var i = 0;
            foreach (var part in content.EnumerateArray())
                CheckPart(part, $"{path}[{i++}]", role);
        }

        void CheckPart(JsonElement part, string path, string? role)
        {
            if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type))
            {
                Error(path, $"must be an object with \"type\" ({Quoted(PartTypes)}), got {(part.ValueKind == JsonValueKind.Object ? "an object without \"type\"" : Kind(part))}");
                return;
            }
            var t = type.ValueKind == JsonValueKind.String ? type.GetString()! : null;
            switch (t)
            {
                case "text":
                    if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                        Error($"{path}.text", "required: a string for a part of type \"text\"");
                    break;
                case "image_url":
                    SawImages = true;
                    if (!options.Vision)
                    {
                        Error(path, "image parts need a vision model (Qwen/Qwen3-VL-*); the selected model is text-only");
                        return;
                    }
                    if (role == "assistant")
                        Error(path, "assistant messages cannot contain images; images belong in user (or system) messages");
                    if (!part.TryGetProperty("image_url", out var image) || image.ValueKind != JsonValueKind.Object
                        || !image.TryGetProperty("url", out var url) || url.ValueKind != JsonValueKind.String)
                        Error($"{path}.image_url", "required: an object {\"url\": \"https://...\" | \"data:image/...;base64,...\" | \"relative/path.png\"}");
                    else if (ImageUrls.Problem(url.GetString()!, options.LocalImagePaths) is { } problem)
                        // A path where none may be is the part's problem (as a failed https fetch is), not the string's shape.
                        Error(!options.LocalImagePaths && ImageUrls.IsPath(url.GetString()!) ? path : $"{path}.image_url.url", problem);
                    break;
                default:
                    Error($"{path}.type", $"must be one of {Quoted(PartTypes)}, got {Value(type)}{(t is null ? "" : Core.Suggest.DidYouMean(t, PartTypes))}");
                    break;
            }
        }

        void CheckToolCalls(JsonElement calls, string path, HashSet<string> ids)
        {
            if (calls.ValueKind != JsonValueKind.Array)
            {
                Error(path, $"must be a list of {{id, type: \"function\", function: {{name, arguments}}}}, got {Kind(calls)}");
                return;
            }
            if (calls.GetArrayLength() == 0)
                Error(path, "must not be an empty list: leave tool_calls out when the message calls no tool");
            var idsHere = new HashSet<string>();
            var i = 0;
            foreach (var call in calls.EnumerateArray())
            {
                var p = $"{path}[{i++}]";
                if (call.ValueKind != JsonValueKind.Object)
                {
                    Error(p, $"must be an object {{id, type: \"function\", function: {{name, arguments}}}}, got {Kind(call)}");
                    continue;
                }
                foreach (var key in call.EnumerateObject())
                    if (key.Name is not ("id" or "type" or "function"))
                        Error($"{p}.{key.Name}", "unknown key; allowed: id, type, function");
                if (call.TryGetProperty("id", out var id))
                {
                    if (id.ValueKind != JsonValueKind.String) Error($"{p}.id", $"must be a string, got {Kind(id)}");
                    else if (!idsHere.Add(id.GetString()!)) Error($"{p}.id", $"\"{id.GetString()}\" is already the id of another call in this message");
                    else ids.Add(id.GetString()!);
                }
                if (call.TryGetProperty("type", out var type) && !(type.ValueKind == JsonValueKind.String && type.GetString() == "function"))
                    Error($"{p}.type", $"must be \"function\", got {Value(type)}");
                if (!call.TryGetProperty("function", out var fn) || fn.ValueKind != JsonValueKind.Object)
                {
                    Error($"{p}.function", "required: an object {\"name\": ..., \"arguments\": \"{...}\"}");
                    continue;
                }
                if (!fn.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString()!.Length == 0)
                    Error($"{p}.function.name", "required: a non-empty string");
                if (!fn.TryGetProperty("arguments", out var args))
                    Error($"{p}.function.arguments", "required: a string holding the JSON arguments, e.g. \"{\\\"city\\\": \\\"Paris\\\"}\"");
                else if (args.ValueKind != JsonValueKind.String)
                    Error($"{p}.function.arguments", $"must be a string holding the JSON arguments (OpenAI format), got {Kind(args)}");
                else if (!IsJson(args.GetString()!))
                    Error($"{p}.function.arguments", $"must hold valid JSON, got {Value(args)}");
                else if (!IsJsonObject(args.GetString()!))
                    Error($"{p}.function.arguments", $"must hold a JSON object of named arguments, got {Value(args)}");
            }
        }

        void CheckTools(JsonElement tools)
        {
            if (tools.ValueKind == JsonValueKind.Null) return;
            if (tools.ValueKind != JsonValueKind.Array)
            {
                Error("tools", $"must be a list of {{type: \"function\", function: {{name, description, parameters}}}}, got {Kind(tools)}");
                return;
            }
            var i = 0;
            foreach (var tool in tools.EnumerateArray())
            {
                var p = $"tools[{i++}]";
                if (tool.ValueKind != JsonValueKind.Object)
                    Error(p, $"must be an object {{type: \"function\", function: {{...}}}}, got {Kind(tool)}");
                else if (!tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                    Error($"{p}.type", $"must be \"function\", got {(tool.TryGetProperty("type", out var t) ? Value(t) : "nothing")}");
                else if (!tool.TryGetProperty("function", out var fn) || fn.ValueKind != JsonValueKind.Object)
                    Error($"{p}.function", "required: an object {\"name\", \"description\", \"parameters\"}");
                else
                {
                    if (!fn.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString()!.Length == 0)
                        Error($"{p}.function.name", "required: a non-empty string");
                    if (fn.TryGetProperty("parameters", out var ps) && ps.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                        Error($"{p}.function.parameters", $"must be a JSON schema object, got {Kind(ps)}");
                }
            }
        }

        /// <summary>Legacy top-level `images: [url, ...]` / `image_url: url | {url}` (converted by DatasetRecords.Normalize).</summary>
        void CheckLegacyImages(JsonElement record)
        {
            var urls = new List<(string Field, JsonElement Url)>();
            if (record.TryGetProperty("images", out var images))
            {
                if (images.ValueKind == JsonValueKind.Array)
                {
                    var i = 0;
                    foreach (var img in images.EnumerateArray())
                    {
                        var f = $"images[{i++}]";
                        urls.Add((f, img.ValueKind == JsonValueKind.Object && img.TryGetProperty("url", out var u) ? u : img));
                    }
                }
                else if (images.ValueKind != JsonValueKind.Null)
                    Error("images", $"must be a list of image URLs, got {Kind(images)}");
            }
            if (record.TryGetProperty("image_url", out var single) && single.ValueKind != JsonValueKind.Null)
                urls.Add(("image_url", single.ValueKind == JsonValueKind.Object && single.TryGetProperty("url", out var u) ? u : single));
            if (urls.Count == 0) return;
            SawImages = true;
            if (!options.Vision)
            {
                Error(urls[0].Field.StartsWith("images") ? "images" : "image_url",
                    "images need a vision model (Qwen/Qwen3-VL-*); the selected model is text-only");
                return;
            }
            foreach (var (field, url) in urls)
            {
                if (url.ValueKind != JsonValueKind.String) Error(field, $"must be an image URL string, got {Kind(url)}");
                else if (ImageUrls.Problem(url.GetString()!, options.LocalImagePaths) is { } problem) Error(field, problem);
            }
            if (!record.TryGetProperty("messages", out var ms) || ms.ValueKind != JsonValueKind.Array
                || !ms.EnumerateArray().Any(m => m.ValueKind == JsonValueKind.Object && m.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String && r.GetString() == "user"))
                Error(urls[0].Field.StartsWith("images") ? "images" : "image_url", "legacy images are attached to the first user message, but the record has none");
        }

        static bool IsJsonObject(string s)
        {
            using var doc = JsonDocument.Parse(s);
            return doc.RootElement.ValueKind == JsonValueKind.Object;
        }

        static bool IsJson(string s)
        {
            try
            {
                using var _ = JsonDocument.Parse(s);
                return true;
            }
            catch (JsonException)
            {
                return false;
            }
        }
    }

    static string Quoted(IEnumerable<string> values) => string.Join(", ", values.Select(v => $"\"{v}\""));

    static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => e.ValueKind.ToString(),
    };

    /// <summary>The value as written (strings shortened), for messages like `got "assitant"`.</summary>
    static string Value(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.String) return e.ValueKind is JsonValueKind.Object or JsonValueKind.Array ? Kind(e) : e.GetRawText();
        var s = e.GetString()!;
        return JsonSerializer.Serialize(s.Length <= 60 ? s : s[..57] + "...", new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }
}

/// <summary>Shape checks for image references (no network access here: the trainer fetches them).</summary>
public static class ImageUrls
{
    /// <summary>
    /// Null when the url is an https:// URL, a base64 data:image URI or (with `localPaths`) a path
    /// relative to the dataset and inside its folder; otherwise why not.
    /// </summary>
    public static string? Problem(string url, bool localPaths)
    {
        var allowed = localPaths
            ? "expected an https:// URL, a data:image/...;base64,... URI or a path relative to the dataset"
            : "expected an https:// URL, a data:image/...;base64,... URI or an image file packed with the dataset (`anneal train` and `anneal files upload` pack the local files a dataset names)";
        if (url.Length == 0) return $"is empty; {allowed}";
        if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            return Uri.TryCreate(url, UriKind.Absolute, out var u) && u.Host.Length > 0 ? null : $"\"{Short(url)}\" is not a valid URL";
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var comma = url.IndexOf(',');
            var header = comma < 0 ? url : url[..comma];
            if (!header.StartsWith("data:image/", StringComparison.OrdinalIgnoreCase) || !header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
                return $"data URI \"{Short(header)}\" must look like data:image/<png|jpeg|webp|...>;base64,<payload>";
            var payload = url.AsSpan(comma + 1);
            if (payload.Length == 0 || !System.Buffers.Text.Base64.IsValid(payload))
                return "data URI payload is not valid base64";
            return null;
        }
        if (!IsPath(url))
            return $"URL scheme \"{url[..url.IndexOf(':')]}:\" is not supported; {allowed}";
        var colon = url.IndexOf(':');
        if (!localPaths)
            return $"local image path \"{Short(url)}\" cannot be read from an uploaded JSONL file; {allowed}";
        if (url[0] is '/' or '\\' or '~' || (colon == 1 && char.IsLetter(url[0])))
            return $"absolute path \"{Short(url)}\" is not inside the uploaded dataset; {allowed}";
        if (url.Replace('\\', '/').Split('/').Contains(".."))
            return $"path \"{Short(url)}\" leaves the dataset folder (\"..\"); {allowed}";
        return null;
    }

    /// <summary>Whether the url is a file path (relative or absolute) rather than an https/data/other-scheme URL.</summary>
    public static bool IsPath(string url)
    {
        if (url.Length == 0 || url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
            return false;
        var colon = url.IndexOf(':');
        var slash = url.IndexOfAny(['/', '\\']);
        return !(colon > 1 && (slash < 0 || colon < slash));
    }

    static string Short(string s) => s.Length <= 60 ? s : s[..57] + "...";
}
