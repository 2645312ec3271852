// Qwen3-VL preprocessing. Expected values derived from the processor's definition, not from our code:
//  - a size already on the 32-grid within budget is not resized, so every patch value is
//    pixel/127.5 − 1 at a position given by the layout formula: patch n = ((bh·gw/2 + bw)·2 + ih)·2 + iw,
//    value k = ((c·2 + t)·16 + py)·16 + px, pixel row (bh·2 + ih)·16 + py, column (bw·2 + iw)·16 + px;
//  - resampling with weights that sum to one keeps a uniform image uniform (odd sizes up and down);
//  - halving a two-colour image along an exact factor keeps pixels far from the edge pure.
using Anneal.Core.Vision;
using Anneal.Training.Native;
using Anneal.Training.Vision;
using TorchSharp;

namespace Anneal.Training.Tests.Vision;

public class ImageProcessorTests
{
    static RgbImage Image(int w, int h, Func<int, int, int, byte> value)
    {
        var rgb = new byte[w * h * 3];
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
                for (var c = 0; c < 3; c++)
                    rgb[(y * w + x) * 3 + c] = value(x, y, c);
        return new RgbImage(w, h, rgb);
    }

    static readonly ImageProcessorConfig Tiny = new() { MinPixels = 64 * 64, MaxPixels = 128 * 128 };

    [Fact]
    public void Grid_sized_image_is_normalised_and_laid_out_in_merge_blocks()
    {
        NativeLibraries.EnsureTorchLoaded();
        static byte V(int x, int y, int c) => (byte)((x * 7 + y * 13 + c * 101) % 256);
        var image = Image(96, 64, V);                                  // 96×64 = 6144: within [64², 128²]
        using var p = ImageProcessor.Process(image, Tiny);
        Assert.Equal(new Anneal.Training.Model.ImageGrid(1, 4, 6), p.Grid);
        Assert.Equal(new long[] { 24, 1536 }, p.Patches.shape);
        var values = p.Patches.data<float>().ToArray();
        int gw = 6;
        for (var n = 0; n < 24; n++)
        {
            int iw = n % 2, ih = n / 2 % 2, block = n / 4, bw = block % (gw / 2), bh = block / (gw / 2);
            for (var k = 0; k < 1536; k += 37)
            {
                int px = k % 16, py = k / 16 % 16, c = k / 512;      // t = k / 256 % 2: both frames equal
                var row = (bh * 2 + ih) * 16 + py;
                var col = (bw * 2 + iw) * 16 + px;
                Assert.Equal((V(col, row, c) - 127.5f) / 127.5f, values[n * 1536 + k]);    // normalize(mean 127.5, std 127.5) in float32
            }
        }
    }

    [Theory]
    [InlineData(45, 77)]      // 45 wide, 77 high: upscaled to 64×96 (32×64 < 64², β = 1.087)
    [InlineData(301, 199)]    // downscaled to 128×96 (288×192 > 128², β = 1.91)
    [InlineData(33, 33)]      // upscaled to 64×64
    public void Uniform_images_of_odd_sizes_stay_uniform(int w, int h)
    {
        var expectedSizes = new Dictionary<(int, int), (int, int)> { [(45, 77)] = (96, 64), [(301, 199)] = (96, 128), [(33, 33)] = (64, 64) };
        NativeLibraries.EnsureTorchLoaded();
        var image = Image(w, h, (_, _, c) => (byte)(40 + c * 90));
        using var p = ImageProcessor.Process(image, Tiny);
        var (eh, ew) = expectedSizes[(w, h)];
        Assert.Equal((eh / 16, ew / 16), (p.Grid.H, p.Grid.W));
        Assert.InRange(eh * ew, Tiny.MinPixels, Tiny.MaxPixels);
        var values = p.Patches.view(-1, 3, 512);                      // (N, c, t·py·px)
        for (var c = 0; c < 3; c++)
        {
            var expected = (40 + c * 90) / 127.5 - 1;
            Assert.True(TestTensors.MaxDiff(values[.., c], torch.full_like(values[.., c], expected)) < 1e-6, $"channel {c}");
        }
    }

    [Fact]
    public void Exact_halving_keeps_pixels_away_from_the_edge_pure()
    {
        NativeLibraries.EnsureTorchLoaded();
        var image = Image(192, 64, (x, _, _) => x < 96 ? (byte)0 : (byte)255);    // left half black, right half white
        var small = new ImageProcessorConfig { MinPixels = 32 * 32, MaxPixels = 96 * 32 };
        var (h, w) = ImageProcessor.TargetSize(64, 192, small);
        Assert.Equal((32, 96), (h, w));
        using var resized = ImageProcessor.Resize(image, h, w);                    // (3, 32, 96) uint8
        Assert.Equal(torch.ScalarType.Byte, resized.dtype);
        Assert.Equal(0, resized[0, 16, 10].item<byte>());
        Assert.Equal(255, resized[0, 16, 90].item<byte>());
        var middle = resized[0, 16, 47].item<byte>();
        Assert.InRange(middle, (byte)0, (byte)60);                                  // bicubic overshoot clamped, mostly black
    }

    [Fact]
    public void Preprocessor_config_of_the_tiny_model_is_read()
    {
        var c = ImageProcessorConfig.Load(TinyFixture.VisionModelDir);
        Assert.Equal((64L * 64, 128L * 128, 16, 2, 2), (c.MinPixels, c.MaxPixels, c.PatchSize, c.TemporalPatchSize, c.MergeSize));
        var defaults = ImageProcessorConfig.Load(TinyFixture.ModelDir);           // text model: no file, Qwen3-VL defaults
        Assert.Equal((65536L, 16777216L), (defaults.MinPixels, defaults.MaxPixels));
    }
}
