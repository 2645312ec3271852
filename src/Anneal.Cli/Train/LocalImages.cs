// `anneal train` packs the local image files a vision dataset refers to into the upload, so a user
// never has to host images: each image part whose url is a path (relative to the dataset's folder,
// and inside it) is replaced by a data: URI of the file's bytes. Legacy top-level `images` /
// `image_url` records are first moved into message parts, as the server would. Lines without local
// images are sent byte for byte as they are.
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Vision;

namespace Anneal.Cli.Train;

public static class LocalImages
{
    /// <summary>The JSONL with local images inlined, or null when it has none; problems go to `errors`.</summary>
    public static byte[]? Inline(Stream jsonl, string datasetFolder, List<ErrorItem> errors, out int packed)
    {
        packed = 0;
        var folder = Path.GetFullPath(datasetFolder);
        var output = new MemoryStream();
        var changed = false;
        foreach (var line in JsonlLines.Read(jsonl))
        {
            if (!line.IsBlank && JsonNode.Parse(line.Bytes) is JsonObject record)
            {
                var normalized = DatasetRecords.Normalize((JsonObject)record.DeepClone());
                var count = InlineRecord(normalized, folder, line.Number, errors);
                if (count > 0)
                {
                    output.Write(Encoding.UTF8.GetBytes(normalized.ToJsonString()));
                    output.WriteByte((byte)'\n');
                    packed += count;
                    changed = true;
                    continue;
                }
            }
            output.Write(line.Bytes);
            output.WriteByte((byte)'\n');
        }
        return changed ? output.ToArray() : null;
    }

    static int InlineRecord(JsonObject record, string folder, int line, List<ErrorItem> errors)
    {
        var count = 0;
        if (record["messages"] is not JsonArray messages) return 0;
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i]?["content"] is not JsonArray parts) continue;
            for (var j = 0; j < parts.Count; j++)
            {
                if (parts[j]?["image_url"] is not JsonObject image || image["url"] is not JsonValue v || !v.TryGetValue<string>(out var url)) continue;
                if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("data:", StringComparison.OrdinalIgnoreCase)) continue;
                var field = $"messages[{i}].content[{j}]";
                var full = Path.GetFullPath(Path.Combine(folder, url));
                if (!full.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                {
                    errors.Add(new ErrorItem(line, field, $"\"{url}\" is outside the dataset's folder {folder}"));
                    continue;
                }
                if (!File.Exists(full))
                {
                    errors.Add(new ErrorItem(line, field, $"image file {full} not found"));
                    continue;
                }
                var bytes = File.ReadAllBytes(full);
                if (ImageDecoder.Sniff(bytes) is not { } format)
                {
                    errors.Add(new ErrorItem(line, field, $"{full} is not a PNG, JPEG, WebP or GIF image"));
                    continue;
                }
                image["url"] = $"data:image/{format};base64,{Convert.ToBase64String(bytes)}";
                count++;
            }
        }
        return count;
    }
}
