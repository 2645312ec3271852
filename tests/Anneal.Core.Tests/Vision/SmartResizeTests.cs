// smart_resize targets. Expected values computed by hand from the processor's rule (round each side
// to a multiple of 32; if the area is above max_pixels scale by β = √(HW/max) and floor, if below
// min_pixels scale by β = √(min/HW) and ceil), the first five as tabulated in QWEN3VL.md §4.
using Anneal.Core.Vision;

namespace Anneal.Core.Tests.Vision;

public class SmartResizeTests
{
    [Theory]
    [InlineData(480, 640, 480, 640)]
    [InlineData(720, 1280, 704, 1280)]
    [InlineData(1080, 1920, 1088, 1920)]
    [InlineData(224, 224, 256, 256)]          // below 256²: scaled up
    [InlineData(5000, 5000, 4096, 4096)]      // above 4096²: scaled down
    [InlineData(45, 77, 224, 352)]            // 32×64 < 65536: β = √(65536/3465) = 4.349 → ceil(6.12)·32, ceil(10.47)·32
    [InlineData(256, 256, 256, 256)]          // exactly min_pixels: unchanged
    [InlineData(4096, 4096, 4096, 4096)]      // exactly max_pixels: unchanged
    [InlineData(80, 3008, 64, 3008)]          // 80/32 = 2.5 rounds half to even → 2, not 3 (area 192512 is within budget)
    public void Qwen3_vl_defaults(int h, int w, int eh, int ew) =>
        Assert.Equal((eh, ew), SmartResize.Compute(h, w));

    [Theory]
    [InlineData(300, 200, 128, 96)]           // 288×192 > 128²: β = √(60000/16384) = 1.914 → floor(4.90)·32, floor(3.27)·32
    [InlineData(20, 30, 64, 96)]              // 32×32 < 64²: β = √(4096/600) = 2.613 → ceil(1.63)·32, ceil(2.45)·32
    public void Tiny_model_budget(int h, int w, int eh, int ew) =>
        Assert.Equal((eh, ew), SmartResize.Compute(h, w, 64 * 64, 128 * 128));

    [Fact]
    public void Aspect_ratio_beyond_200_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => SmartResize.Compute(10, 2500));
        Assert.Contains("aspect ratio must be smaller than 200", e.Message);
    }
}
