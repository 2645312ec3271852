// Where the images of a normalised dataset record are: each image part of each message, in render
// order, with the field path errors name (`messages[0].content[1]`). Parts are the OpenAI shape
// {"type": "image_url", "image_url": {"url": …}} (or a bare url string), or {"type": "image", "image"|"url": …}.
using System.Text.Json.Nodes;

namespace Anneal.Core.Vision;

public static class ImageReferences
{
    public static IEnumerable<(string Field, string Url)> Of(JsonObject record)
    {
        if (record["messages"] is not JsonArray messages) yield break;
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i]?["content"] is not JsonArray parts) continue;
            for (var j = 0; j < parts.Count; j++)
            {
                if (parts[j] is not JsonObject part) continue;
                var type = Text(part["type"]);
                if (type is not ("image_url" or "image")) continue;
                var url = type == "image_url"
                    ? part["image_url"] is JsonObject o ? Text(o["url"]) : Text(part["image_url"])
                    : Text(part["image"]) ?? Text(part["url"]);
                yield return ($"messages[{i}].content[{j}]", url ?? "");
            }
        }
    }

    static string? Text(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String ? v.GetValue<string>() : null;
}
