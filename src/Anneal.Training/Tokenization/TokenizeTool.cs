// `anneal tokenize --model <folder> [--chat]`.
//   raw:    stdin text → {"ids":[…],"tokens":[…]}   (tokens as written in tokenizer.json, e.g. "Ġworld";
//           one trailing newline, as `echo` adds, is not tokenized)
//   --chat: JSONL dataset records on stdin → one line per record:
//           {"ids":[…],"mask":[0|1…],"text":"<rendered conversation>"}
//           where mask 1 marks the tokens the loss is taken on (assistant answers and their <|im_end|>).
//           Blank lines are skipped; the first bad record stops with its line number and field.
// Exit codes: 0 done, 2 bad input (missing or unreadable tokenizer files, bad JSON, bad record).
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Training.Tokenization;

public static class TokenizeTool
{
    public const int ExitOk = 0, ExitUserError = 2;

    public static int Run(string modelDir, bool chat, TextReader input, TextWriter output, TextWriter error)
    {
        Qwen3Tokenizer tokenizer;
        try { tokenizer = Qwen3Tokenizer.Load(modelDir); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {e.Message}");
            return ExitUserError;
        }
        return chat ? RunChat(tokenizer, input, output, error) : RunRaw(tokenizer, input, output);
    }

    static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static int RunRaw(Qwen3Tokenizer tokenizer, TextReader input, TextWriter output)
    {
        var text = input.ReadToEnd();
        if (text.EndsWith("\r\n", StringComparison.Ordinal)) text = text[..^2];
        else if (text.EndsWith('\n')) text = text[..^1];
        var ids = tokenizer.Encode(text);
        output.WriteLine(Write(w =>
        {
            w.WriteStartArray("ids");
            foreach (var id in ids) w.WriteNumberValue(id);
            w.WriteEndArray();
            w.WriteStartArray("tokens");
            foreach (var id in ids) w.WriteStringValue(tokenizer.IdToToken(id));
            w.WriteEndArray();
        }));
        return ExitOk;
    }

    static int RunChat(Qwen3Tokenizer tokenizer, TextReader input, TextWriter output, TextWriter error)
    {
        int lineNumber = 0, records = 0;
        for (string? line; (line = input.ReadLine()) is not null;)
        {
            lineNumber++;
            if (lineNumber == 1) line = line.TrimStart('\uFEFF');
            if (string.IsNullOrWhiteSpace(line)) continue;
            records++;

            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e)
            {
                error.WriteLine($"error: stdin line {lineNumber}: invalid JSON at byte {e.BytePositionInLine + 1}: {e.Message}");
                return ExitUserError;
            }
            if (node is not JsonObject record)
            {
                error.WriteLine($"error: stdin line {lineNumber}: expected a JSON object with \"messages\", got {node?.GetValueKind().ToString().ToLowerInvariant() ?? "null"}");
                return ExitUserError;
            }

            EncodedExample example;
            try { example = Qwen3ChatTemplate.Encode(tokenizer, record); }
            catch (ChatRecordException e)
            {
                error.WriteLine($"error: stdin line {lineNumber}: field {e.Field}: {e.Message[(e.Field.Length + 2)..]}");
                return ExitUserError;
            }

            output.WriteLine(Write(w =>
            {
                w.WriteStartArray("ids");
                foreach (var id in example.InputIds) w.WriteNumberValue(id);
                w.WriteEndArray();
                w.WriteStartArray("mask");
                foreach (var t in example.Trained) w.WriteNumberValue(t ? 1 : 0);
                w.WriteEndArray();
                w.WriteString("text", example.Text);
            }));
        }
        if (records == 0)
        {
            error.WriteLine("error: stdin: no JSONL record; expected a line like {\"messages\": [{\"role\": \"user\", \"content\": \"…\"}, …]}");
            return ExitUserError;
        }
        return ExitOk;
    }

    static string Write(Action<Utf8JsonWriter> body)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, WriterOptions))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}
