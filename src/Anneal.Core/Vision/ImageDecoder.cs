// Decoding of dataset images to 8-bit RGB, as the Hugging Face processor sees them after
// PIL's `convert("RGB")`: PNG, JPEG, WebP and GIF (first frame), alpha dropped without compositing.
// Skia (SkiaSharp, the decoder Chromium ships and fuzzes) is used rather than a managed decoder
// because these bytes come from users and the network. The pixel count is checked from the header
// before any pixel is decoded, so a small file claiming a huge canvas costs nothing.
using SkiaSharp;

namespace Anneal.Core.Vision;

/// <summary>An image as row-major RGB bytes: Height × Width × 3.</summary>
public sealed record RgbImage(int Width, int Height, byte[] Rgb);

public static class ImageDecoder
{
    /// <summary>The formats accepted, by their data-URI / Content-Type subtype.</summary>
    public static readonly IReadOnlyList<string> Formats = ["png", "jpeg", "webp", "gif"];

    /// <summary>Default largest canvas accepted (width × height), far above any training budget.</summary>
    public const long DefaultMaxPixels = 50_000_000;

    /// <summary>The format of an encoded image ("png", "jpeg", "webp", "gif"), or null when it is none of them.</summary>
    public static string? Sniff(ReadOnlySpan<byte> bytes)
    {
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])) return "png";
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0xFF, 0xD8, 0xFF])) return "jpeg";
        if (bytes.StartsWith("GIF87a"u8) || bytes.StartsWith("GIF89a"u8)) return "gif";
        if (bytes.Length >= 12 && bytes.StartsWith("RIFF"u8) && bytes[8..12].SequenceEqual("WEBP"u8)) return "webp";
        return null;
    }

    /// <summary>Decodes to RGB; null and the reason when the bytes are not a supported, intact image within maxPixels.</summary>
    public static RgbImage? TryDecode(byte[] bytes, out string? problem, long maxPixels = DefaultMaxPixels)
    {
        problem = null;
        if (Sniff(bytes) is null)
        {
            problem = $"not a PNG, JPEG, WebP or GIF image ({bytes.Length} bytes starting {Convert.ToHexString(bytes.AsSpan(0, Math.Min(8, bytes.Length)))})";
            return null;
        }
        using var stream = new SKMemoryStream(bytes);
        using var codec = SKCodec.Create(stream, out var result);
        if (codec is null)
        {
            problem = $"the image cannot be read ({result})";
            return null;
        }
        var (width, height) = (codec.Info.Width, codec.Info.Height);
        if (width <= 0 || height <= 0)
        {
            problem = $"the image has no pixels ({width}×{height})";
            return null;
        }
        if ((long)width * height > maxPixels)
        {
            problem = $"the image is {width}×{height} = {(long)width * height:N0} pixels, more than the {maxPixels:N0} allowed";
            return null;
        }
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var rgba = new byte[info.BytesSize];
        var pinned = System.Runtime.InteropServices.GCHandle.Alloc(rgba, System.Runtime.InteropServices.GCHandleType.Pinned);
        try
        {
            // Frame 0 only (a GIF's first frame, as PIL opens it).
            var status = codec.GetPixels(info, pinned.AddrOfPinnedObject(), new SKCodecOptions(0));
            if (status != SKCodecResult.Success)
            {
                problem = status == SKCodecResult.IncompleteInput ? "the image data is truncated" : $"the image cannot be decoded ({status})";
                return null;
            }
        }
        finally { pinned.Free(); }
        var rgb = new byte[width * height * 3];
        for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
        {
            rgb[i] = rgba[j];
            rgb[i + 1] = rgba[j + 1];
            rgb[i + 2] = rgba[j + 2];
        }
        return new RgbImage(width, height, rgb);
    }
}
