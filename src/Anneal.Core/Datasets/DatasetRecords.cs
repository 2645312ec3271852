// Records of a validated dataset as the trainer consumes them: one JsonObject per non-blank line,
// with legacy vision fields moved into the OpenAI multimodal message shape:
//   {"images": ["a.png"], "messages": [{"role": "user", "content": "Describe"}, ...]}
//   → {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}},
//                                               {"type": "text", "text": "Describe"}]}, ...]}
// Images go before the text, the order Qwen-VL prompts use.
using System.Text.Json.Nodes;

namespace Anneal.Core.Datasets;

public static class DatasetRecords
{
    /// <summary>Reads the records of a JSONL file one line at a time, normalised. Run the validator first.</summary>
    public static IEnumerable<(int Line, JsonObject Record)> Read(string path)
    {
        using var stream = File.OpenRead(path);
        foreach (var line in JsonlLines.Read(stream))
        {
            if (line.IsBlank) continue;
            var node = JsonNode.Parse(line.Bytes) as JsonObject
                ?? throw new InvalidDataException($"{path}: Line {line.Number}: expected a JSON object");
            yield return (line.Number, Normalize(node));
        }
    }

    /// <summary>
    /// Moves top-level `images` (list of urls or {url}) and `image_url` (url or {url}) into image parts
    /// of the first user message and removes those keys. Records without them are returned unchanged.
    /// </summary>
    public static JsonObject Normalize(JsonObject record)
    {
        var urls = new List<string>();
        if (record["images"] is JsonArray images)
            foreach (var img in images)
                if (UrlOf(img) is { } u) urls.Add(u);
        if (UrlOf(record["image_url"]) is { } single) urls.Add(single);
        record.Remove("images");
        record.Remove("image_url");
        if (urls.Count == 0) return record;

        var firstUser = (record["messages"] as JsonArray)?.OfType<JsonObject>()
            .FirstOrDefault(m => m["role"]?.GetValue<string>() == "user")
            ?? throw new InvalidDataException("legacy images need a user message to attach to");
        var parts = new JsonArray();
        foreach (var u in urls)
            parts.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = u } });
        switch (firstUser["content"])
        {
            case JsonArray existing:
                foreach (var p in existing.ToList())
                {
                    existing.Remove(p);
                    parts.Add(p);
                }
                break;
            case JsonValue text:
                parts.Add(new JsonObject { ["type"] = "text", ["text"] = text.GetValue<string>() });
                break;
        }
        firstUser["content"] = parts;
        return record;
    }

    static string? UrlOf(JsonNode? node) => node switch
    {
        JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.String => v.GetValue<string>(),
        JsonObject o when o["url"] is JsonValue u && u.GetValueKind() == System.Text.Json.JsonValueKind.String => u.GetValue<string>(),
        _ => null,
    };
}
