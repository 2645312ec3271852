// The images of a chat request: every `{"type": "image_url", "image_url": {"url": …}}` part of the
// messages, decoded (PNG, JPEG, WebP, GIF first frame → RGB) in the order the chat template meets
// them. Only data: URIs are decoded here: the inference process never opens a network connection.
// Behind `anneal serve`, the control plane has already fetched https URLs through its SSRF guards
// (the same as for dataset uploads) and sent them on as data: URIs; run alone, an https URL is a
// 400 that says so. Each bad image is a 400 naming `messages[i].content[j].image_url.url`.
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Vision;

namespace Anneal.Inference.OpenAi;

public static class ImageInputs
{
    /// <summary>Images one request may carry (each is a tower pass and up to thousands of prompt tokens).</summary>
    public const int MaxImages = 16;

    /// <summary>The decoded images with the field each came from; none for a text-only request.</summary>
    public static List<(string Field, RgbImage Image)> Read(JsonArray messages)
    {
        var images = new List<(string, RgbImage)>();
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i]?["content"] is not JsonArray parts) continue;
            for (var j = 0; j < parts.Count; j++)
            {
                if (parts[j]?["type"] is not JsonValue type || type.GetValueKind() != JsonValueKind.String || type.GetValue<string>() != "image_url") continue;
                var field = $"messages[{i}].content[{j}].image_url.url";
                var url = parts[j]!["image_url"] switch
                {
                    JsonObject o when o["url"] is JsonValue u && u.GetValueKind() == JsonValueKind.String => u.GetValue<string>(),
                    JsonValue s when s.GetValueKind() == JsonValueKind.String => s.GetValue<string>(),
                    _ => throw OpenAiError.BadRequest("an image_url part needs {\"url\": \"data:image/...;base64,...\"}", $"messages[{i}].content[{j}].image_url"),
                };
                if (images.Count == MaxImages)
                    throw OpenAiError.BadRequest($"more than {MaxImages} images in one request", field);
                images.Add((field, Decode(url, field)));
            }
        }
        return images;
    }

    static RgbImage Decode(string url, string field)
    {
        if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            throw OpenAiError.BadRequest(
                $"image URLs are not fetched by this inference process; send the image as a data:image/...;base64,... URI (behind `anneal serve`, https URLs are fetched by the server)", field);
        if (!url.StartsWith("data:image/", StringComparison.OrdinalIgnoreCase))
            throw OpenAiError.BadRequest($"expected a data:image/...;base64,... URI or an https:// URL, got \"{(url.Length > 40 ? url[..40] + "…" : url)}\"", field);
        var comma = url.IndexOf(',');
        if (comma < 0 || !url[..comma].EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
            throw OpenAiError.BadRequest("a data URI image must be base64: data:image/<type>;base64,<payload>", field);
        byte[] bytes;
        try { bytes = Convert.FromBase64String(url[(comma + 1)..]); }
        catch (FormatException) { throw OpenAiError.BadRequest("the data URI's payload is not valid base64", field); }
        return ImageDecoder.TryDecode(bytes, out var problem) ?? throw OpenAiError.BadRequest($"the image cannot be used: {problem}", field);
    }
}
