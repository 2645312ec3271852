// The streaming check against the document rules it must agree with: any chunking of the bytes
// (lines, CRLF, BOM and multi-byte characters split across chunks), long lines, the line limit,
// invalid UTF-8, and a differential test over generated variations of rich records, where the
// fast scan may only accept what the document rules accept.
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;

namespace Anneal.Core.Tests.Datasets;

public class DatasetCheckTests
{
    const string Good = """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}""";

    static DatasetReport Chunked(byte[] bytes, int chunk, DatasetValidationOptions? options = null)
    {
        using var check = new DatasetCheck(options);
        for (var i = 0; i < bytes.Length; i += chunk) check.Append(bytes.AsSpan(i, Math.Min(chunk, bytes.Length - i)));
        return check.Complete();
    }

    static DatasetReport Reference(byte[] bytes, DatasetValidationOptions? options = null) =>
        DatasetValidator.ValidateByDocument(new MemoryStream(bytes), options);

    static void AssertSame(DatasetReport expected, DatasetReport actual, string because = "")
    {
        Assert.True(expected.NumExamples == actual.NumExamples, $"examples {expected.NumExamples} vs {actual.NumExamples} {because}");
        Assert.True(expected.TotalErrors == actual.TotalErrors,
            $"errors {expected.TotalErrors} vs {actual.TotalErrors} {because}: [{string.Join("; ", expected.Errors)}] vs [{string.Join("; ", actual.Errors)}]");
        Assert.Equal(expected.Errors, actual.Errors);
        Assert.Equal(expected.ExamplesWithImages, actual.ExamplesWithImages);
    }

    // Line 1 BOM + CRLF, blank lines (one CRLF only), a multi-byte character, a broken record, a
    // record with a bad role, and a last line without '\n'.
    static readonly byte[] Mixed = Encoding.UTF8.GetBytes(
        "\uFEFF" + Good + "\r\n\r\n   \n" + Good.Replace("Hello!", "Grüße, 你好 😀") + "\n{\"messages\": [}\r\n"
        + Good.Replace("\"user\"", "\"usr\"") + "\n\n" + Good);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(100_000)]
    public void Any_chunking_gives_the_same_report_as_the_document_rules(int chunk)
    {
        var expected = Reference(Mixed);
        Assert.Equal(5, expected.NumExamples);
        Assert.Equal([5, 6], expected.Errors.Select(e => e.Line!.Value));
        AssertSame(expected, Chunked(Mixed, chunk), $"(chunks of {chunk})");
    }

    [Fact]
    public void Invalid_utf8_split_across_chunks_names_the_line_and_byte()
    {
        var bytes = Encoding.UTF8.GetBytes(Good + "\n{\"messages\": \"").Concat(new byte[] { 0xC3, 0x28 }).Concat(Encoding.UTF8.GetBytes("\"}\n")).ToArray();
        var split = Array.IndexOf(bytes, (byte)0xC3) + 1; // the chunk boundary falls inside the bad sequence
        using var check = new DatasetCheck();
        check.Append(bytes.AsSpan(0, split));
        check.Append(bytes.AsSpan(split));
        var e = Assert.Single(check.Complete().Errors);
        Assert.Equal("Line 2: invalid UTF-8 at byte 15 of the line; save the file as UTF-8", e.ToString());
    }

    [Fact]
    public void Lines_longer_than_the_buffer_are_assembled_and_checked_whole()
    {
        // A 3 MiB reply: three times the initial buffer.
        var longLine = Good.Replace("Hello!", new string('x', 3 << 20));
        var bytes = Encoding.UTF8.GetBytes(Good + "\n" + longLine + "\n" + longLine.Replace("\"user\"", "\"usr\"") + "\n" + Good + "\n");
        var report = Chunked(bytes, 81920);
        Assert.Equal(4, report.NumExamples);
        var e = Assert.Single(report.Errors);
        Assert.Equal(3, e.Line);
        Assert.Equal("messages[0].role", e.Field);
        using var stream = new MemoryStream(bytes);
        AssertSame(report, DatasetValidator.Validate(stream));
    }

    [Fact]
    public void A_line_over_the_limit_is_one_error_and_the_rest_is_not_read()
    {
        using var check = new DatasetCheck();
        check.Append(Encoding.UTF8.GetBytes(Good + "\n\n"));
        var chunk = Enumerable.Repeat((byte)'a', 1 << 20).ToArray();
        for (var i = 0; i <= JsonlLines.MaxLineBytes >> 20; i++) check.Append(chunk);
        check.Append(Encoding.UTF8.GetBytes("\n{broken\n"));
        var report = check.Complete();
        Assert.Equal(1, report.NumExamples);
        var e = Assert.Single(report.Errors);
        Assert.Equal("Line 3: longer than 64 MiB; one example per line is expected", e.ToString());
    }

    [Fact]
    public void A_line_of_exactly_the_limit_is_read()
    {
        using var check = new DatasetCheck();
        var chunk = Enumerable.Repeat((byte)' ', 1 << 20).ToArray();
        for (var i = 0; i < JsonlLines.MaxLineBytes >> 20; i++) check.Append(chunk);
        check.Append("\n"u8); // a '\r' before it would count toward the limit, as in JsonlLines
        check.Append(Encoding.UTF8.GetBytes(Good));
        var report = check.Complete();
        Assert.Equal(1, report.NumExamples);
        Assert.True(report.IsValid, string.Join("\n", report.Errors));
    }

    [Fact]
    public void Images_are_counted_by_example_and_refused_for_a_text_model_with_the_same_errors()
    {
        const string parts = """{"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}, {"role": "assistant", "content": "A cat."}]}""";
        const string legacy = """{"images": ["https://example.com/b.png"], "messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A dog."}]}""";
        var bytes = Encoding.UTF8.GetBytes(string.Join("\n", Good, parts, Good, legacy, parts));
        var vision = new DatasetValidationOptions(Vision: true);
        var report = Chunked(bytes, 13, vision);
        Assert.True(report.IsValid);
        Assert.Equal(3, report.ExamplesWithImages);
        AssertSame(Reference(bytes, vision), report);
        var text = Chunked(bytes, 13);
        Assert.Equal([2, 4, 5], text.Errors.Select(e => e.Line!.Value));
        AssertSame(Reference(bytes), text);
    }

    [Fact]
    public void Memory_is_released_and_the_pooled_buffer_returned_once()
    {
        var check = new DatasetCheck();
        check.Append(Encoding.UTF8.GetBytes(Good));
        Assert.True(check.Complete().IsValid);
        check.Dispose();
        check.Dispose();
        Assert.Equal(Good.Length, check.Bytes);
    }

    // ---- The fast scan against the document rules ----

    /// <summary>Valid records using every feature the scan handles itself.</summary>
    static readonly string[] Rich =
    [
        Good,
        """
        {"messages": [
          {"role": "system", "content": "You are a weather bot.", "name": null},
          {"role": "user", "content": "Weather in Paris? \u00e9\ud83d\ude00 \"quoted\" \\ \n", "name": "ann"},
          {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"n\": [1, {\"x\": null}]}"}}, {"id": "call_2", "function": {"name": "g", "arguments": " {} ", "extra": [1]}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"},
          {"role": "tool", "tool_call_id": "call_2", "content": ""},
          {"role": "assistant", "content": "It is 18 °C in Paris.", "reasoning_content": "The tool said 18."},
          {"role": "user", "content": [{"type": "text", "text": "Thanks", "cache": {"a": 1}}]},
          {"role": "assistant", "content": [{"type": "text", "text": ""}, {"text": "You're welcome.", "type": "text"}]}],
         "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                   {"type": "function", "function": {"name": "g", "parameters": null}, "strict": true}],
         "metadata": {"source": "unit-test", "nested": [{"k": "\u4e2d"}], "n": 1.5e3}}
        """,
        """{"metadata": null, "tools": null, "messages": [{"role": "user", "content": "\u4e2d\u6587"}, {"role": "assistant", "content": "\t\u00a0ok", "tool_calls": null}]}""",
        """{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": " ", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"q\": \"\\ud83d\\ude00\"}"}}]}, {"role": "tool", "content": "x"}]}""",
    ];

    [Fact]
    public void The_scan_proves_rich_valid_records_valid_without_the_document_rules()
    {
        var scan = new RecordScan();
        foreach (var record in Rich)
        {
            var line = Encoding.UTF8.GetBytes(record.ReplaceLineEndings(" "));
            Assert.True(Reference(line).IsValid, string.Join("\n", Reference(line).Errors));
            Assert.True(scan.IsValid(line), record);
        }
    }

    [Theory]
    [InlineData("\"\"", false)]
    [InlineData("\" \\t\\n\\r \\u00a0\\u2003\"", false)]
    [InlineData("\"\u3000\"", false)]                  // ideographic space, raw
    [InlineData("\"\\u0041\"", true)]
    [InlineData("\"\\b\"", true)]                      // backspace is not white space
    [InlineData("\"  \u4e2d\"", true)]
    [InlineData("\"\\ud83d\\ude00\"", true)]
    public void Blank_text_is_told_apart_as_string_IsNullOrWhiteSpace_does(string json, bool visible)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var reader = new Utf8JsonReader(bytes);
        reader.Read();
        Assert.Equal(!string.IsNullOrWhiteSpace(reader.GetString()), visible);
        Assert.Equal(visible, RecordScan.HasVisibleText(reader.ValueSpan, reader.ValueIsEscaped));
    }

    [Theory]
    [InlineData("a\\ud800", true)]
    [InlineData("\\udc00b", true)]
    [InlineData("\\ud83d\\ude00", false)]
    [InlineData("\\ud83d\\u0041", true)]
    [InlineData("\\ud83d", true)]
    [InlineData("\\\\ud800", false)] // an escaped backslash, then plain text
    [InlineData("\\u00e9\\n", false)]
    public void Lone_surrogate_escapes_are_found(string raw, bool lone) =>
        Assert.Equal(lone, RecordScan.HasLoneSurrogate(Encoding.UTF8.GetBytes(raw)));

    /// <summary>
    /// Every rich record mutated at every position (value replaced by each kind, key removed,
    /// renamed, escaped, duplicated): the streaming check and the document rules agree on each,
    /// and where the scan accepts, the rules accept.
    /// </summary>
    [Fact]
    public void Generated_variations_agree_with_the_document_rules()
    {
        var scan = new RecordScan();
        int cases = 0, scanned = 0;
        foreach (var record in Rich)
            foreach (var variant in Variations(JsonNode.Parse(record)!))
            {
                var line = Encoding.UTF8.GetBytes(variant);
                // The scan leaves every image to the rules, so only records with images need both models.
                foreach (var vision in variant.Contains("image") ? new[] { false, true } : [false])
                {
                    var options = new DatasetValidationOptions(Vision: vision);
                    var expected = Reference(line, options);
                    if (scan.IsValid(line))
                    {
                        Assert.True(expected.IsValid, $"the scan accepted a record the rules refuse: {variant}\n{string.Join("\n", expected.Errors)}");
                        scanned++;
                    }
                    AssertSame(expected, Chunked(line, 5, options), variant);
                    cases++;
                }
            }
        Assert.True(cases > 1500, $"{cases} cases");
        Assert.True(scanned > 100, $"only {scanned} variants accepted by the scan");
    }

    static readonly JsonSerializerOptions Raw = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static IEnumerable<string> Variations(JsonNode root)
    {
        JsonNode?[] replacements =
        [
            null, JsonValue.Create(1), JsonValue.Create(""), JsonValue.Create("  "), JsonValue.Create("user"),
            JsonValue.Create("assistant"), JsonValue.Create("tool"), JsonValue.Create("function"), JsonValue.Create("text"),
            JsonValue.Create("{}"), JsonValue.Create("[1]"), JsonValue.Create("call_1"), JsonValue.Create(true),
            new JsonArray(), new JsonObject(), new JsonArray(JsonValue.Create(1)), new JsonObject { ["type"] = "text" },
            new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "a.png" } },
        ];
        var paths = new List<(JsonNode Parent, string? Key, int Index)>();
        Collect(root, paths);
        for (var p = 0; p < paths.Count; p++)
        {
            foreach (var replacement in replacements)
                yield return Mutate(root, p, (parent, key, index) => Set(parent, key, index, replacement?.DeepClone()));
            yield return Mutate(root, p, (parent, key, index) =>
            {
                if (parent is JsonObject o) o.Remove(key!);
                else ((JsonArray)parent).RemoveAt(index);
            });
            if (paths[p].Key is { } name)
            {
                yield return Mutate(root, p, (parent, key, _) =>
                {
                    var o = (JsonObject)parent;
                    var value = o[key!];
                    o.Remove(key!);
                    o[key![..^1]] = value?.DeepClone();
                });
                // A duplicate key and an escaped key, written by hand (JsonNode cannot hold them).
                var text = root.ToJsonString(Raw);
                var quoted = $"\"{name}\":";
                var at = text.IndexOf(quoted, StringComparison.Ordinal);
                if (at >= 0)
                {
                    yield return text.Insert(at, $"\"{name}\":null,");
                    yield return text[..at] + $"\"\\u{(int)name[0]:x4}{name[1..]}\":" + text[(at + quoted.Length)..];
                }
            }
        }
        yield return root.ToJsonString(Raw);
        yield return root.ToJsonString(); // the default encoder escapes every non-ASCII character
        yield return root.ToJsonString(Raw).Replace("Paris", "Par\\ud800is");
        yield return root.ToJsonString(Raw).Replace("weather", "weather\\udfff");
        yield return root.ToJsonString(Raw) + " x";
        yield return root.ToJsonString(Raw) + " \t";
    }

    static void Collect(JsonNode node, List<(JsonNode, string?, int)> paths)
    {
        if (node is JsonObject o)
            foreach (var (key, value) in o.ToList())
            {
                paths.Add((o, key, -1));
                if (value is not null) Collect(value, paths);
            }
        else if (node is JsonArray a)
            for (var i = 0; i < a.Count; i++)
            {
                paths.Add((a, null, i));
                if (a[i] is { } item) Collect(item, paths);
            }
    }

    static string Mutate(JsonNode root, int path, Action<JsonNode, string?, int> change)
    {
        var copy = root.DeepClone();
        var paths = new List<(JsonNode Parent, string? Key, int Index)>();
        Collect(copy, paths);
        var (parent, key, index) = paths[path];
        change(parent, key, index);
        return copy.ToJsonString(Raw);
    }

    static void Set(JsonNode parent, string? key, int index, JsonNode? value)
    {
        if (parent is JsonObject o) o[key!] = value;
        else ((JsonArray)parent)[index] = value;
    }
}
