// Qwen3-VL image preprocessing as Hugging Face's Qwen2VLImageProcessorFast does it (torchvision
// backend, the v5 default), on RGB bytes from Anneal.Core.Vision.ImageDecoder:
//   1. smart resize to multiples of patch·merge (32) within [min_pixels, max_pixels];
//   2. bicubic resize with antialias on the uint8 CHW tensor, on the CPU: the same libtorch kernel
//      torchvision's resize calls (uint8 bicubic runs natively there, no float round trip);
//   3. normalise in float32: (x − 255·mean) / (255·std), i.e. x/127.5 − 1 with Qwen's 0.5/0.5;
//   4. patchify: the frame duplicated to temporal_patch_size 2, then rows of 3·2·16·16 = 1536 values
//      in (c, t, py, px) order, patches in 2×2 merge-block order (block row, block col, row, col).
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Core.Vision;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Vision;

/// <summary>One image ready for the tower: patches (N, 1536) float32 on the CPU, and its grid.</summary>
public sealed record ProcessedImage(Tensor Patches, ImageGrid Grid) : IDisposable
{
    public void Dispose() => Patches.Dispose();
}

/// <summary>The fields of preprocessor_config.json the processor uses (Qwen3-VL's values as defaults).</summary>
public sealed record ImageProcessorConfig
{
    public long MinPixels { get; init; } = SmartResize.DefaultMinPixels;
    public long MaxPixels { get; init; } = SmartResize.DefaultMaxPixels;
    public int PatchSize { get; init; } = 16;
    public int TemporalPatchSize { get; init; } = 2;
    public int MergeSize { get; init; } = 2;
    public double[] Mean { get; init; } = [0.5, 0.5, 0.5];
    public double[] Std { get; init; } = [0.5, 0.5, 0.5];

    /// <summary>
    /// Reads preprocessor_config.json from a model folder: `size.shortest_edge`/`size.longest_edge`
    /// (the pixel budget, despite the names) or the older `min_pixels`/`max_pixels`. Missing file: defaults.
    /// </summary>
    public static ImageProcessorConfig Load(string folder)
    {
        var path = Path.Combine(folder, VisionModelFolder.PreprocessorConfigFile);
        if (!File.Exists(path)) return new ImageProcessorConfig();
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new System.Text.Json.JsonException("not an object"); }
        catch (System.Text.Json.JsonException e) { throw TrainerUserException.Config($"{path}: not valid JSON ({e.Message})"); }
        var c = new ImageProcessorConfig();
        long? Long(JsonNode? n) => n is JsonValue v && v.TryGetValue<double>(out var d) ? (long)d : null;
        int? Int(JsonNode? n) => Long(n) is { } l ? (int)l : null;
        double[]? Triple(JsonNode? n) => n is JsonArray a && a.Count == 3 ? a.Select(x => (double)x!).ToArray() : null;
        c = c with
        {
            MinPixels = Long(o["size"]?["shortest_edge"]) ?? Long(o["min_pixels"]) ?? c.MinPixels,
            MaxPixels = Long(o["size"]?["longest_edge"]) ?? Long(o["max_pixels"]) ?? c.MaxPixels,
            PatchSize = Int(o["patch_size"]) ?? c.PatchSize,
            TemporalPatchSize = Int(o["temporal_patch_size"]) ?? c.TemporalPatchSize,
            MergeSize = Int(o["merge_size"]) ?? c.MergeSize,
            Mean = Triple(o["image_mean"]) ?? c.Mean,
            Std = Triple(o["image_std"]) ?? c.Std,
        };
        if (c.MinPixels < 1 || c.MaxPixels < c.MinPixels)
            throw TrainerUserException.Config($"{path}: min_pixels {c.MinPixels} and max_pixels {c.MaxPixels} must satisfy 1 ≤ min ≤ max");
        return c;
    }
}

public static class ImageProcessor
{
    /// <summary>The size an image is resized to (height, width).</summary>
    public static (int Height, int Width) TargetSize(int height, int width, ImageProcessorConfig c) =>
        SmartResize.Compute(height, width, c.MinPixels, c.MaxPixels, c.PatchSize * c.MergeSize);

    /// <summary>Resized uint8 image (3, h', w') on the CPU.</summary>
    public static Tensor Resize(RgbImage image, int height, int width)
    {
        using var scope = NewDisposeScope();
        var chw = torch.tensor(image.Rgb, dtype: ScalarType.Byte).view(image.Height, image.Width, 3).permute(2, 0, 1).unsqueeze(0);  // (1, 3, H, W)
        if (height == image.Height && width == image.Width)
            return chw.squeeze(0).contiguous().MoveToOuterDisposeScope();
        var resized = nn.functional.interpolate(chw, [height, width], mode: InterpolationMode.Bicubic, align_corners: false, antialias: true);
        return resized.squeeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>RGB image → patches (N, 3·T·P·P) float32 and grid (1, h'/P, w'/P).</summary>
    public static ProcessedImage Process(RgbImage image, ImageProcessorConfig c)
    {
        using var scope = NewDisposeScope();
        var (height, width) = TargetSize(image.Height, image.Width, c);
        var pixels = Resize(image, height, width).to(ScalarType.Float32);                           // (3, h', w')
        var mean = torch.tensor(c.Mean.Select(m => (float)(m * 255)).ToArray()).view(3, 1, 1);
        var std = torch.tensor(c.Std.Select(s => (float)(s * 255)).ToArray()).view(3, 1, 1);
        pixels = (pixels - mean) / std;
        int P = c.PatchSize, M = c.MergeSize, Tp = c.TemporalPatchSize;
        int gh = height / P, gw = width / P;
        var frames = pixels.unsqueeze(0).expand(Tp, 3, height, width);                              // (T, 3, h', w'), the frame repeated
        var patches = frames.reshape(1, Tp, 3, gh / M, M, P, gw / M, M, P)
            .permute(3, 6, 4, 7, 2, 1, 5, 8, 0)                                                       // (bh, bw, ih, iw, C, T, py, px, 1)
            .reshape((long)gh * gw, 3L * Tp * P * P);
        return new ProcessedImage(patches.contiguous().MoveToOuterDisposeScope(), new ImageGrid(1, gh, gw));
    }
}
