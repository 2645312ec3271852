// Image decoding for vision datasets: each accepted format to exact RGB (lossless ones), alpha
// dropped without compositing, GIF's first frame, and refusals that say what is wrong.
using Anneal.Core.Vision;
using SkiaSharp;

namespace Anneal.Core.Tests.Vision;

public class ImageDecoderTests
{
    /// <summary>A w×h image whose pixel (x, y) is (x·10, y·20, 200) with alpha 255 − x, encoded with Skia.</summary>
    public static byte[] Encode(int w, int h, SKEncodedImageFormat format, int quality = 100)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
                bitmap.SetPixel(x, y, new SKColor((byte)(x * 10), (byte)(y * 20), 200, (byte)(255 - x)));
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(format, quality);
        return data.ToArray();
    }

    // GIF89a, 2×1, global palette [(10, 20, 30), (200, 100, 50)], first frame indices [0, 1], then a
    // second frame [1, 0]: hand-assembled (LZW code size 2: clear 4, end 5).
    static readonly byte[] TwoFrameGif =
    [
        .."GIF89a"u8, 2, 0, 1, 0, 0x80, 0, 0, 10, 20, 30, 200, 100, 50,
        0x2C, 0, 0, 0, 0, 2, 0, 1, 0, 0, 2, 2, 0x44, 0x0A, 0,     // image 1: codes clear, 0, 1, end (3 bits each, LSB first)
        0x2C, 0, 0, 0, 0, 2, 0, 1, 0, 0, 2, 2, 0x0C, 0x0A, 0,     // image 2: codes clear, 1, 0, end
        0x3B,
    ];

    [Theory]
    [InlineData(SKEncodedImageFormat.Png, "png")]
    [InlineData(SKEncodedImageFormat.Webp, "webp")]
    public void Lossless_formats_decode_to_the_exact_rgb_and_drop_alpha(SKEncodedImageFormat format, string sniffed)
    {
        var bytes = Encode(7, 5, format);
        Assert.Equal(sniffed, ImageDecoder.Sniff(bytes));
        var image = ImageDecoder.TryDecode(bytes, out var problem);
        Assert.Null(problem);
        Assert.Equal((7, 5), (image!.Width, image.Height));
        for (var y = 0; y < 5; y++)
            for (var x = 0; x < 7; x++)
                Assert.Equal(new byte[] { (byte)(x * 10), (byte)(y * 20), 200 }, image.Rgb.AsSpan((y * 7 + x) * 3, 3).ToArray());
    }

    [Fact]
    public void Jpeg_decodes_close_to_the_original()
    {
        var image = ImageDecoder.TryDecode(Encode(16, 16, SKEncodedImageFormat.Jpeg), out var problem)!;
        Assert.Null(problem);
        Assert.Equal((16, 16), (image.Width, image.Height));
        Assert.InRange(image.Rgb[(5 * 16 + 3) * 3 + 2], 180, 220);          // blue channel 200 everywhere
    }

    [Fact]
    public void Gif_gives_its_first_frame()
    {
        Assert.Equal("gif", ImageDecoder.Sniff(TwoFrameGif));
        var image = ImageDecoder.TryDecode(TwoFrameGif, out var problem);
        Assert.Null(problem);
        Assert.Equal(new byte[] { 10, 20, 30, 200, 100, 50 }, image!.Rgb);
    }

    [Theory]
    [InlineData("not an image at all", "not a PNG, JPEG, WebP or GIF image")]
    [InlineData("<svg xmlns='http://www.w3.org/2000/svg'/>", "not a PNG, JPEG, WebP or GIF image")]
    public void Other_content_is_refused_by_type(string content, string expected)
    {
        Assert.Null(ImageDecoder.TryDecode(System.Text.Encoding.UTF8.GetBytes(content), out var problem));
        Assert.Contains(expected, problem);
    }

    [Fact]
    public void Truncated_and_corrupt_images_are_refused()
    {
        var png = Encode(40, 30, SKEncodedImageFormat.Png);
        Assert.Null(ImageDecoder.TryDecode(png[..(png.Length / 2)], out var truncated));
        Assert.NotNull(truncated);
        var corrupt = png.ToArray();
        for (var i = 8; i < 40; i++) corrupt[i] ^= 0x5A;                    // header chunk garbled
        Assert.Null(ImageDecoder.TryDecode(corrupt, out var garbled));
        Assert.NotNull(garbled);
    }

    [Fact]
    public void Canvas_larger_than_the_limit_is_refused_before_decoding()
    {
        var png = Encode(40, 30, SKEncodedImageFormat.Png);
        Assert.Null(ImageDecoder.TryDecode(png, out var problem, maxPixels: 1000));
        Assert.Equal("the image is 40×30 = 1,200 pixels, more than the 1,000 allowed", problem);
    }
}
