// Supervised fine-tuning data for vision-language models: JSONL records in the OpenAI multimodal
// shape → token ids with each <|image_pad|> expanded to the image's merged-token count, the trained
// mask, and the encoded image bytes (decoded and patchified again per step, so memory holds
// compressed images rather than 6 KB of floats per patch).
//   {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}},
//                                              {"type": "text", "text": "What is shown?"}]},
//                 {"role": "assistant", "content": "A red square."}]}
// Image sources: data: URIs, https URLs the server fetched at upload (looked up through
// `resolveUrl`), and paths: with `localImageFiles` (a user's own folder) relative to the dataset's
// folder and inside it; otherwise (a server's upload, stored beside other organisations' files)
// only the content hash of an image stored for this very dataset. Truncation never cuts through an
// image: an image that does not fit whole is dropped with the text after it.
using System.Text.Json.Nodes;
using Anneal.Core.Datasets;
using Anneal.Core.Vision;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using Anneal.Training.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Data;

/// <summary>An image of an example: its encoded bytes and the grid the processor gives it.</summary>
public sealed record VisionImage(byte[] Encoded, ImageGrid Grid);

/// <summary>One encoded multimodal example; Images in the order of their image tokens.</summary>
public sealed record VisionSftExample(int Line, int[] Ids, bool[] Trained, IReadOnlyList<VisionImage> Images)
{
    public int Length => Ids.Length;
    public int TrainedTokens => Trained.Count(x => x);
}

/// <summary>One example on the device: ids (1, T), positions (3, 1, T), targets (1, T), patches (N, P) and grids.</summary>
public sealed record VisionBatch(Tensor Ids, Tensor Positions, Tensor Targets, Tensor? Patches, IReadOnlyList<ImageGrid> Grids, int TrainedTokens, int Tokens) : IDisposable
{
    public void Dispose()
    {
        Ids.Dispose(); Positions.Dispose(); Targets.Dispose(); Patches?.Dispose();
    }
}

public static class VisionSftData
{
    /// <summary>
    /// Reads and encodes a validated JSONL file. `thinkBlocks`: render assistant turns the Qwen3 way
    /// (Thinking variants) or as the Qwen3-VL Instruct template does (answer text only).
    /// </summary>
    public static (List<VisionSftExample> Examples, DataStats Stats) Load(string path, string displayName, Qwen3Tokenizer tokenizer,
        Qwen3VLConfig config, ImageProcessorConfig processor, int sequenceLength, bool thinkBlocks, Func<string, byte[]?>? resolveUrl = null,
        int maxImagesPerMessage = int.MaxValue, Action<int, int>? trimmed = null, bool localImageFiles = false)
    {
        var fullPath = Path.GetFullPath(path);
        var examples = new List<VisionSftExample>();
        int total = 0, truncated = 0, dropped = 0, longest = 0, keepAll = 0;
        long tokens = 0, trained = 0;
        foreach (var (line, record) in DatasetRecords.Read(path))
        {
            total++;
            if (TrimImages(record, maxImagesPerMessage) is > 0 and var removed) trimmed?.Invoke(line, removed);
            var images = new List<VisionImage>();
            foreach (var (field, url) in ImageReferences.Of(record))
            {
                byte[]? bytes;
                try { bytes = ReadSource(url, fullPath, localImageFiles, resolveUrl); }
                catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
                {
                    throw TrainerUserException.BadData($"{displayName}: Line {line}: {field}: the image cannot be read ({e.Message})");
                }
                if (bytes is null)
                    throw TrainerUserException.BadData($"{displayName}: Line {line}: {field}: {Describe(url, localImageFiles)}");
                var image = ImageDecoder.TryDecode(bytes, out var problem)
                    ?? throw TrainerUserException.BadData($"{displayName}: Line {line}: {field}: {problem}");
                (int h, int w) size;
                try { size = ImageProcessor.TargetSize(image.Height, image.Width, processor); }
                catch (ArgumentException e) { throw TrainerUserException.BadData($"{displayName}: Line {line}: {field}: {e.Message}"); }
                images.Add(new VisionImage(bytes, new ImageGrid(1, size.h / processor.PatchSize, size.w / processor.PatchSize)));
            }

            EncodedExample encoded;
            try { encoded = Qwen3ChatTemplate.Encode(tokenizer, record, thinkBlocks); }
            catch (ChatRecordException e) { throw TrainerUserException.BadData($"{displayName}: Line {line}: {e.Message}"); }
            var (ids, mask) = Expand(encoded, images, config.ImageTokenId, processor.MergeSize, line, displayName);
            longest = Math.Max(longest, ids.Length);
            var firstTrained = Array.IndexOf(mask, true, Math.Min(1, mask.Length));
            if (firstTrained > 0) keepAll = Math.Max(keepAll, firstTrained + 1);

            var cut = ids.Length > sequenceLength;
            var kept = images.Count;
            if (cut) (ids, mask, kept) = Truncate(ids, mask, images, sequenceLength, config, processor.MergeSize);
            if (mask.Length > 0) mask[0] = false;
            var example = new VisionSftExample(line, ids, mask, images.Take(kept).ToList());
            if (example.TrainedTokens == 0) { dropped++; continue; }
            if (cut) truncated++;
            examples.Add(example);
            tokens += ids.Length;
            trained += example.TrainedTokens;
        }
        return (examples, new DataStats(examples.Count, tokens, trained, truncated, dropped, total, longest, keepAll));
    }

    /// <summary>Drops the image parts of a message beyond the first `max` (the model's max_images_per_message); returns how many.</summary>
    static int TrimImages(JsonObject record, int max)
    {
        var removed = 0;
        if (record["messages"] is not JsonArray messages) return 0;
        foreach (var message in messages)
        {
            if (message?["content"] is not JsonArray parts) continue;
            var images = parts.Where(p => (string?)(p?["type"] as JsonValue) is "image_url" or "image").ToList();
            foreach (var extra in images.Skip(max))
            {
                parts.Remove(extra);
                removed++;
            }
        }
        return removed;
    }

    static string Describe(string url, bool localImageFiles) =>
        url.StartsWith("https://", StringComparison.OrdinalIgnoreCase)
            ? $"the image at {url} was not found (https images are fetched by the server when the file is uploaded)"
            : localImageFiles
                ? $"the image file \"{url}\" was not found"
                : $"the local image path \"{url}\" names no image stored with this dataset (an uploaded file refers to images by data: URI or https URL; `anneal train` packs local files)";

    /// <summary>
    /// The encoded bytes of a data: URI, a URL the server stored, or a path: a file inside the
    /// dataset's folder (`localImageFiles`) or else only a stored image of this dataset named by its hash.
    /// </summary>
    static byte[]? ReadSource(string url, string datasetPath, bool localImageFiles, Func<string, byte[]?>? resolveUrl)
    {
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var comma = url.IndexOf(',');
            if (comma < 0) throw new FormatException("a data URI needs a comma before its payload");
            return Convert.FromBase64String(url[(comma + 1)..]);
        }
        if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            return resolveUrl?.Invoke(url);
        if (!localImageFiles) return StoredImages.ReadByHash(datasetPath, url);
        var folder = Path.GetDirectoryName(datasetPath)!;
        var full = Path.GetFullPath(Path.Combine(folder, url));
        if (!full.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new IOException($"\"{url}\" is outside the dataset's folder");
        return File.Exists(full) ? File.ReadAllBytes(full) : null;
    }

    /// <summary>Each single &lt;|image_pad|&gt; becomes its image's token count (context, never trained).</summary>
    static (int[] Ids, bool[] Trained) Expand(EncodedExample e, IReadOnlyList<VisionImage> images, int imageTokenId, int merge, int line, string name)
    {
        var pads = e.InputIds.Count(id => id == imageTokenId);
        if (pads != images.Count)
            throw TrainerUserException.BadData($"{name}: Line {line}: {pads} image placeholders in the rendered text for {images.Count} images (is <|image_pad|> written in a text part?)");
        var ids = new List<int>(e.InputIds.Length + images.Sum(i => i.Grid.Tokens(merge)));
        var trained = new List<bool>(ids.Capacity);
        var next = 0;
        for (var t = 0; t < e.InputIds.Length; t++)
        {
            if (e.InputIds[t] != imageTokenId) { ids.Add(e.InputIds[t]); trained.Add(e.Trained[t]); continue; }
            var count = images[next++].Grid.Tokens(merge);
            ids.AddRange(Enumerable.Repeat(imageTokenId, count));
            trained.AddRange(Enumerable.Repeat(false, count));
        }
        return (ids.ToArray(), trained.ToArray());
    }

    /// <summary>Cuts to `length` tokens; an image that would be cut is removed whole with everything after its vision_start.</summary>
    static (int[] Ids, bool[] Trained, int KeptImages) Truncate(int[] ids, bool[] trained, IReadOnlyList<VisionImage> images, int length, Qwen3VLConfig config, int merge)
    {
        var end = length;
        var kept = 0;
        var t = 0;
        while (t < ids.Length && kept < images.Count)
        {
            if (ids[t] != config.ImageTokenId) { t++; continue; }
            var count = images[kept].Grid.Tokens(merge);
            if (t + count > end)
            {
                // Back to this image's <|vision_start|> (the token before its pads), if any.
                end = t > 0 && ids[t - 1] == config.VisionStartTokenId ? t - 1 : t;
                break;
            }
            kept++;
            t += count;
        }
        return (ids[..end], trained[..end], kept);
    }

    /// <summary>Builds one example's tensors: targets shifted (Targets[t] = ids[t+1] when trained), patches processed now.</summary>
    public static VisionBatch Collate(VisionSftExample e, Qwen3VLConfig config, ImageProcessorConfig processor, Device device)
    {
        var T = e.Length;
        var targets = new long[T];
        Array.Fill(targets, SftData.IgnoreIndex);
        var trained = 0;
        for (var t = 0; t + 1 < T; t++)
            if (e.Trained[t + 1]) { targets[t] = e.Ids[t + 1]; trained++; }
        var next = 0;
        var grids = e.Images.Select(i => i.Grid).ToList();
        var (positions, _) = MRope.Compute(e.Ids, grids, ref next, config.ImageTokenId, processor.MergeSize);

        using var scope = NewDisposeScope();
        Tensor? patches = null;
        if (e.Images.Count > 0)
        {
            var parts = new List<Tensor>();
            foreach (var image in e.Images)
            {
                var rgb = ImageDecoder.TryDecode(image.Encoded, out var problem) ?? throw new InvalidDataException(problem);
                var processed = ImageProcessor.Process(rgb, processor);
                if (processed.Grid != image.Grid) throw new InvalidOperationException($"image grid {processed.Grid} differs from the planned {image.Grid}");
                parts.Add(processed.Patches);
            }
            patches = torch.cat(parts, dim: 0).to(device).MoveToOuterDisposeScope();
        }
        var ids = torch.tensor(e.Ids.Select(i => (long)i).ToArray()).view(1, T).to(device).MoveToOuterDisposeScope();
        var pos = torch.tensor(positions).view(3, 1, T).to(device).MoveToOuterDisposeScope();
        var tgt = torch.tensor(targets).view(1, T).to(device).MoveToOuterDisposeScope();
        return new VisionBatch(ids, pos, tgt, patches, grids, trained, T);
    }
}
