// Qwen3's chat template (the Jinja template in Qwen3's tokenizer_config.json), written out in C# so a
// dataset record renders to exactly the same text, and so each piece of text is known to be part of an
// assistant answer (trained) or not. Shape of the output for a conversation with tools:
//   <|im_start|>system\n{system}\n\n# Tools\n…<tools>\n{tool json}\n</tools>\n…<|im_end|>\n
//   <|im_start|>user\n{text}<|im_end|>\n
//   <|im_start|>assistant\n{content}\n<tool_call>\n{"name": …, "arguments": …}\n</tool_call><|im_end|>\n
//   <|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n
//   <|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>\n
// Thinking: assistant turns after the last real user query show their reasoning in <think> (the very last
// turn always gets a block, empty if it has none); earlier turns have it stripped, as the model never
// sees its old reasoning at inference time.
// Content given as a list of parts is joined: text parts as they are, images as Qwen-VL's
// <|vision_start|><|image_pad|><|vision_end|> (the text-only template has no notion of parts).
// Trained (DESIGN §6): an assistant turn's text after "<|im_start|>assistant\n" up to and including its
// <|im_end|>; the "\n" after <|im_end|> and everything else is context.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Training.Tokenization;

/// <summary>Token ids of one rendered example and, per token, whether the loss is taken on it.</summary>
public sealed record EncodedExample(int[] InputIds, bool[] Trained)
{
    /// <summary>The rendered text the ids encode.</summary>
    public string Text { get; init; } = "";
    public int TrainedTokens => Trained.Count(t => t);
}

/// <summary>A piece of rendered text and whether it belongs to an assistant answer.</summary>
public readonly record struct ChatSegment(string Text, bool Trained);

/// <summary>A dataset record that cannot be rendered; <see cref="Field"/> is a path like messages[2].content.</summary>
public sealed class ChatRecordException(string field, string message) : Exception($"{field}: {message}")
{
    public string Field { get; } = field;
}

public static class Qwen3ChatTemplate
{
    /// <summary>SHA-256 (hex, of the UTF-8 text) of the Jinja chat template shipped with Qwen3 models, which this class reproduces.</summary>
    public const string Qwen3TemplateSha256 = "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5";

    /// <summary>
    /// True when a model's Jinja template (tokenizer_config.json chat_template) is exactly Qwen3's, so rendering
    /// with this class gives the text the model's own template would. Others (e.g. later Qwen3 releases with
    /// edited templates) are still rendered the Qwen3 way; callers may want to say so.
    /// </summary>
    public static bool IsQwen3Template(string? template) =>
        template is not null && Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(template))) == Qwen3TemplateSha256;

    public const string ImageTokens = "<|vision_start|><|image_pad|><|vision_end|>";
    public const string VideoTokens = "<|vision_start|><|video_pad|><|vision_end|>";

    /// <summary>The whole text, as the Jinja template renders it.</summary>
    public static string Render(JsonObject record, bool addGenerationPrompt = false, bool? enableThinking = null) =>
        string.Concat(RenderSegments(record, addGenerationPrompt, enableThinking).Select(s => s.Text));

    /// <summary>Renders and tokenizes a training record: ids of the whole text, and the trained-token mask.</summary>
    /// <param name="thinkBlocks">false renders assistant turns as the Qwen3-VL Instruct template does: the answer
    /// text as written, no &lt;think&gt; block added or stripped.</param>
    public static EncodedExample Encode(Qwen3Tokenizer tokenizer, JsonObject record, bool thinkBlocks = true)
    {
        // Normalise each piece before joining, so offsets into the text are offsets into what the tokenizer
        // sees (a piece boundary is always after "\n" or next to a special token, where NFC cannot join two pieces).
        var segments = RenderSegments(record, false, null, thinkBlocks).Select(s => s with { Text = Nfc.Normalize(s.Text) }).ToList();
        var text = string.Concat(segments.Select(s => s.Text));

        // Tokenize the whole text once (never piece by piece: "\n" + "\n" may be one token "\n\n"), then mark
        // each token trained if its characters overlap a trained piece. A token that straddles the boundary
        // after "<|im_start|>assistant\n" counts as trained, as with Hugging Face's assistant-token masks.
        var ids = new List<int>();
        var starts = new List<int>();
        tokenizer.EncodeTo(text, ids, starts);
        var trainedChar = new bool[text.Length];
        int pos = 0;
        foreach (var s in segments)
        {
            if (s.Trained) Array.Fill(trainedChar, true, pos, s.Text.Length);
            pos += s.Text.Length;
        }
        var trained = new bool[ids.Count];
        for (int i = 0; i < ids.Count; i++)
        {
            int end = i + 1 < ids.Count ? Math.Max(starts[i + 1], starts[i] + 1) : text.Length;
            for (int c = starts[i]; c < end && c < text.Length; c++)
                if (trainedChar[c]) { trained[i] = true; break; }
        }
        return new EncodedExample(ids.ToArray(), trained) { Text = text };
    }

    /// <summary>The rendered text as consecutive pieces, each marked trained or not.</summary>
    public static List<ChatSegment> RenderSegments(JsonObject record, bool addGenerationPrompt = false, bool? enableThinking = null, bool thinkBlocks = true)
    {
        var messages = ReadMessages(record);
        var tools = record["tools"] switch
        {
            null => [],
            JsonArray a => a.ToList(),
            var other => throw new ChatRecordException("tools", $"expected a list of tool definitions, got {Kind(other)}"),
        };

        var output = new List<ChatSegment>();
        void Context(string text) { if (text.Length > 0) output.Add(new ChatSegment(text, false)); }
        void Answer(string text) { if (text.Length > 0) output.Add(new ChatSegment(text, true)); }

        bool firstIsSystem = messages.Count > 0 && messages[0].Role == "system";
        if (tools.Count > 0)
        {
            var sb = new StringBuilder("<|im_start|>system\n");
            if (firstIsSystem) sb.Append(messages[0].Content).Append("\n\n");
            sb.Append("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>");
            foreach (var tool in tools) sb.Append('\n').Append(PythonJson.Dumps(tool));
            sb.Append("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
            Context(sb.ToString());
        }
        else if (firstIsSystem)
            Context("<|im_start|>system\n" + messages[0].Content + "<|im_end|>\n");

        // The last user message that is a real query (not a wrapped tool response), scanning backwards.
        int lastQuery = messages.Count - 1;
        for (int i = messages.Count - 1; i >= 0; i--)
        {
            var m = messages[i];
            if (m.Role == "user" && !(m.Content.StartsWith("<tool_response>", StringComparison.Ordinal) && m.Content.EndsWith("</tool_response>", StringComparison.Ordinal)))
            {
                lastQuery = i;
                break;
            }
        }

        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            bool last = i == messages.Count - 1;
            if (m.Role == "user" || (m.Role == "system" && i > 0))
            {
                Context("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n");
            }
            else if (m.Role == "assistant")
            {
                string content = m.Content, reasoning = "";
                if (!thinkBlocks) { }
                else if (m.Reasoning is not null) reasoning = m.Reasoning;
                else if (content.Contains("</think>", StringComparison.Ordinal))
                {
                    string before = content[..content.IndexOf("</think>", StringComparison.Ordinal)];
                    reasoning = AfterLast(before.TrimEnd('\n'), "<think>").TrimStart('\n');
                    content = AfterLast(content, "</think>").TrimStart('\n');
                }

                Context("<|im_start|>assistant\n");
                var answer = new StringBuilder();
                if (thinkBlocks && i > lastQuery && (last || reasoning.Length > 0))
                    answer.Append("<think>\n").Append(reasoning.Trim('\n')).Append("\n</think>\n\n").Append(content.TrimStart('\n'));
                else
                    answer.Append(content);

                for (int t = 0; t < m.ToolCalls.Count; t++)
                {
                    if ((t == 0 && content.Length > 0) || t > 0) answer.Append('\n');
                    var (name, arguments) = m.ToolCalls[t];
                    answer.Append("<tool_call>\n{\"name\": \"").Append(name).Append("\", \"arguments\": ").Append(arguments).Append("}\n</tool_call>");
                }
                answer.Append("<|im_end|>");
                Answer(answer.ToString());
                Context("\n");
            }
            else if (m.Role == "tool")
            {
                var sb = new StringBuilder();
                if (i == 0 || messages[i - 1].Role != "tool") sb.Append("<|im_start|>user");
                sb.Append("\n<tool_response>\n").Append(m.Content).Append("\n</tool_response>");
                if (last || messages[i + 1].Role != "tool") sb.Append("<|im_end|>\n");
                Context(sb.ToString());
            }
        }

        if (addGenerationPrompt)
            Context(enableThinking == false ? "<|im_start|>assistant\n<think>\n\n</think>\n\n" : "<|im_start|>assistant\n");

        // Join neighbours with the same flag: fewer, longer pieces.
        var merged = new List<ChatSegment>();
        foreach (var s in output)
        {
            if (merged.Count > 0 && merged[^1].Trained == s.Trained) merged[^1] = new ChatSegment(merged[^1].Text + s.Text, s.Trained);
            else merged.Add(s);
        }
        return merged;
    }

    /// <summary>Python's s.split(sep)[-1].</summary>
    static string AfterLast(string s, string sep)
    {
        int k = s.LastIndexOf(sep, StringComparison.Ordinal);
        return k < 0 ? s : s[(k + sep.Length)..];
    }

    sealed record Message(string Role, string Content, string? Reasoning, List<(string Name, string Arguments)> ToolCalls);

    static readonly string[] Roles = ["system", "user", "assistant", "tool"];

    static List<Message> ReadMessages(JsonObject record)
    {
        if (record["messages"] is not JsonArray array)
            throw new ChatRecordException("messages", record["messages"] is null ? "missing; expected a list of messages" : $"expected a list of messages, got {Kind(record["messages"])}");
        var messages = new List<Message>(array.Count);
        for (int i = 0; i < array.Count; i++)
        {
            string at = $"messages[{i}]";
            if (array[i] is not JsonObject m) throw new ChatRecordException(at, $"expected an object with role and content, got {Kind(array[i])}");
            var role = m["role"] is JsonValue rv && rv.GetValueKind() == JsonValueKind.String ? rv.GetValue<string>() : null;
            if (role is null || !Roles.Contains(role))
                throw new ChatRecordException(at + ".role", $"expected one of {string.Join(", ", Roles)}, got {(m["role"] is null ? "nothing" : m["role"]!.ToJsonString())}");

            var toolCalls = role == "assistant" ? ReadToolCalls(m["tool_calls"], at + ".tool_calls") : [];
            // An assistant turn that only calls tools may have null or no content.
            bool contentOptional = role == "assistant";
            var content = ReadContent(m["content"], at + ".content", contentOptional);

            string? reasoning = null;
            if (role == "assistant" && m["reasoning_content"] is { } rc)
            {
                if (rc is JsonValue v && v.GetValueKind() == JsonValueKind.String) reasoning = v.GetValue<string>();
                else if (rc.GetValueKind() != JsonValueKind.Null) throw new ChatRecordException(at + ".reasoning_content", $"expected a string, got {Kind(rc)}");
            }
            messages.Add(new Message(role, content, reasoning, toolCalls));
        }
        return messages;
    }

    static string ReadContent(JsonNode? node, string at, bool optional)
    {
        switch (node)
        {
            case null when optional:
                return "";
            case null:
                throw new ChatRecordException(at, "missing; expected a string or a list of parts");
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                return v.GetValue<string>();
            case JsonArray parts:
                var sb = new StringBuilder();
                for (int p = 0; p < parts.Count; p++)
                {
                    string pat = $"{at}[{p}]";
                    if (parts[p] is not JsonObject part) throw new ChatRecordException(pat, $"expected a part object like {{\"type\": \"text\", \"text\": \"…\"}}, got {Kind(parts[p])}");
                    var type = part["type"] is JsonValue tv && tv.GetValueKind() == JsonValueKind.String ? tv.GetValue<string>() : null;
                    switch (type)
                    {
                        case "text":
                            if (part["text"] is not JsonValue t || t.GetValueKind() != JsonValueKind.String)
                                throw new ChatRecordException(pat + ".text", "expected a string");
                            sb.Append(t.GetValue<string>());
                            break;
                        case "image_url" or "image":
                            sb.Append(ImageTokens);
                            break;
                        case "video_url" or "video":
                            sb.Append(VideoTokens);
                            break;
                        default:
                            throw new ChatRecordException(pat + ".type", $"expected \"text\", \"image_url\" or \"image\", got {(part["type"] is null ? "nothing" : part["type"]!.ToJsonString())}");
                    }
                }
                return sb.ToString();
            default:
                if (optional && node.GetValueKind() == JsonValueKind.Null) return "";
                throw new ChatRecordException(at, $"expected a string or a list of parts, got {Kind(node)}");
        }
    }

    static List<(string, string)> ReadToolCalls(JsonNode? node, string at)
    {
        if (node is null || node.GetValueKind() == JsonValueKind.Null) return [];
        if (node is not JsonArray calls) throw new ChatRecordException(at, $"expected a list of tool calls, got {Kind(node)}");
        var result = new List<(string, string)>();
        for (int i = 0; i < calls.Count; i++)
        {
            string cat = $"{at}[{i}]";
            if (calls[i] is not JsonObject call) throw new ChatRecordException(cat, $"expected {{\"function\": {{\"name\": …, \"arguments\": …}}}}, got {Kind(calls[i])}");
            // OpenAI shape {"type": "function", "function": {...}} or the bare function object.
            var fn = call["function"] is JsonObject f ? f : call;
            string fat = call["function"] is JsonObject ? cat + ".function" : cat;
            if (fn["name"] is not JsonValue nv || nv.GetValueKind() != JsonValueKind.String)
                throw new ChatRecordException(fat + ".name", "expected the function name as a string");
            // The template writes a string argument as it is (OpenAI sends arguments as JSON text) and
            // anything else through tojson.
            string arguments = fn["arguments"] switch
            {
                JsonValue av when av.GetValueKind() == JsonValueKind.String => av.GetValue<string>(),
                null => throw new ChatRecordException(fat + ".arguments", "missing; expected an object or a JSON string"),
                var other => PythonJson.Dumps(other),
            };
            result.Add((nv.GetValue<string>(), arguments));
        }
        return result;
    }

    static string Kind(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "an object",
        JsonArray => "a list",
        _ => node.GetValueKind() switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            _ => "null",
        },
    };
}
