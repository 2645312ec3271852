// The Qwen2-VL / Qwen3-VL processor's target size (smart_resize in image_processing_qwen2_vl.py):
// both sides rounded to a multiple of `factor` (patch 16 × merge 2 = 32), then scaled, keeping the
// aspect ratio, into [minPixels, maxPixels]. Python's round() rounds halves to even, as Math.Round does.
namespace Anneal.Core.Vision;

public static class SmartResize
{
    /// <summary>Qwen3-VL's preprocessor_config.json: size.shortest_edge = 256², size.longest_edge = 4096².</summary>
    public const long DefaultMinPixels = 65_536;
    public const long DefaultMaxPixels = 16_777_216;
    public const int Factor = 32;

    /// <summary>(height, width) to resize to, or a problem (aspect ratio beyond 200).</summary>
    public static (int Height, int Width) Compute(int height, int width, long minPixels = DefaultMinPixels, long maxPixels = DefaultMaxPixels, int factor = Factor)
    {
        if ((double)Math.Max(height, width) / Math.Min(height, width) > 200)
            throw new ArgumentException($"absolute aspect ratio must be smaller than 200, got {(double)Math.Max(height, width) / Math.Min(height, width):G4} ({width}×{height})");
        double h = height, w = width;
        var hBar = Math.Round(h / factor) * factor;
        var wBar = Math.Round(w / factor) * factor;
        if (hBar * wBar > maxPixels)
        {
            var beta = Math.Sqrt(h * w / maxPixels);
            hBar = Math.Max(factor, Math.Floor(h / beta / factor) * factor);
            wBar = Math.Max(factor, Math.Floor(w / beta / factor) * factor);
        }
        else if (hBar * wBar < minPixels)
        {
            var beta = Math.Sqrt(minPixels / (h * w));
            hBar = Math.Ceiling(h * beta / factor) * factor;
            wBar = Math.Ceiling(w * beta / factor) * factor;
        }
        return ((int)hBar, (int)wBar);
    }
}
