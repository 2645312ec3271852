// Greedy decoding for Qwen3-VL with a KV cache (`anneal generate --image`): one user turn with the
// images first, then the text, rendered as the Instruct template does; the prompt pass carries the
// image features and 3-D positions, and each later token sits at the text position after the
// prompt's largest one (position + rope delta on all three axes), as transformers' generate does.
using System.Text.Json.Nodes;
using Anneal.Core.Vision;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using Anneal.Training.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training;

public static class VisionGeneration
{
    /// <summary>Prompt ids with each image's pad run expanded, and the processed images.</summary>
    public static (int[] Ids, List<ProcessedImage> Images) Prompt(Qwen3Tokenizer tokenizer, Qwen3VLConfig config, ImageProcessorConfig processor,
        string prompt, IReadOnlyList<RgbImage> images)
    {
        var parts = new JsonArray();
        foreach (var _ in images) parts.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "image" } });
        parts.Add(new JsonObject { ["type"] = "text", ["text"] = prompt });
        var record = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = parts }) };
        var ids = tokenizer.Encode(Qwen3ChatTemplate.Render(record, addGenerationPrompt: true));
        var processed = images.Select(i => ImageProcessor.Process(i, processor)).ToList();
        var expanded = new List<int>();
        var next = 0;
        foreach (var id in ids)
        {
            if (id == config.ImageTokenId) expanded.AddRange(Enumerable.Repeat(id, processed[next++].Grid.Tokens(processor.MergeSize)));
            else expanded.Add(id);
        }
        return (expanded.ToArray(), processed);
    }

    /// <summary>Greedy continuation (without the stop token).</summary>
    public static List<int> Greedy(Qwen3VLForConditionalGeneration model, int[] promptIds, IReadOnlyList<ProcessedImage> images, int merge,
        int maxNewTokens, ISet<int> stopIds, CancellationToken ct = default)
    {
        model.eval();
        using var _ = no_grad();
        var device = model.OutputWeight.device;
        var grids = images.Select(i => i.Grid).ToList();
        var nextImage = 0;
        var (prompt3d, delta) = MRope.Compute(promptIds, grids, ref nextImage, model.Config.ImageTokenId, merge);
        using var cache = new KvCache(model.Config.Text.NumHiddenLayers);
        using var features = images.Count == 0 ? null : model.ImageFeatures(torch.cat(images.Select(i => i.Patches).ToArray(), 0).to(device), grids);
        var output = new List<int>();
        long length = promptIds.Length;
        for (var i = 0; i < maxNewTokens && !ct.IsCancellationRequested; i++)
        {
            using var scope = NewDisposeScope();
            VisionLanguageInputs inputs;
            if (i == 0)
                inputs = new VisionLanguageInputs(torch.tensor(promptIds.Select(x => (long)x).ToArray(), device: device).view(1, -1),
                    torch.tensor(prompt3d).view(3, 1, -1).to(device), null, features, cache);
            else
            {
                var p = length - 1 + delta;                                                        // the new token's text position
                inputs = new VisionLanguageInputs(torch.tensor(new long[] { output[^1] }, device: device).view(1, 1),
                    torch.full(3, 1, 1, p, dtype: ScalarType.Int64, device: device), torch.ones(1, 1, 1, length, dtype: ScalarType.Bool, device: device), null, cache);
            }
            var hidden = model.Hidden(inputs);
            var logits = model.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1));
            var token = (int)logits.argmax(-1).item<long>();
            if (stopIds.Contains(token)) break;
            output.Add(token);
            length++;
        }
        foreach (var image in images) image.Dispose();
        return output;
    }
}
