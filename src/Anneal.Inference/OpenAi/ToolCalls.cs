// Qwen3 calls tools by writing, after any text, one block per call (see Qwen3ChatTemplate):
//   <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
// This returns them as OpenAI `tool_calls` (arguments as a JSON string) and the text around them
// as content. A block that is not valid JSON stays in the content, as vLLM's hermes parser does.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Anneal.Inference.OpenAi;

public static partial class ToolCalls
{
    public const string Open = "<tool_call>";

    [GeneratedRegex(@"<tool_call>\s*(.*?)\s*</tool_call>", RegexOptions.Singleline)]
    private static partial Regex Block();

    /// <summary>(content without the parsed blocks, or null when empty; the calls).</summary>
    public static (string? Content, JsonArray Calls) Parse(string text)
    {
        var calls = new JsonArray();
        var content = Block().Replace(text, m =>
        {
            try
            {
                if (JsonNode.Parse(m.Groups[1].Value) is JsonObject call && call["name"] is JsonValue name && name.GetValueKind() == JsonValueKind.String)
                {
                    var args = call["arguments"] ?? call["parameters"];
                    calls.Add(new JsonObject
                    {
                        ["id"] = "call_" + Guid.NewGuid().ToString("N")[..24],
                        ["type"] = "function",
                        ["function"] = new JsonObject
                        {
                            ["name"] = name.GetValue<string>(),
                            ["arguments"] = args is JsonValue s && s.GetValueKind() == JsonValueKind.String ? s.GetValue<string>() : (args?.ToJsonString() ?? "{}"),
                        },
                    });
                    return "";
                }
            }
            catch (JsonException) { }
            return m.Value;
        }).Trim();
        return (content.Length == 0 ? null : content, calls);
    }
}
