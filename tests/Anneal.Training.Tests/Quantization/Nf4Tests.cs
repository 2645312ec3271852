// NF4 quantisation: bytes and nibble order against hand-computed values, the dynamic map of the
// scales, the round-trip error on Gaussian weights (bitsandbytes gives a relative RMS error of
// 0.092), the 4.127 bits per weight, and blocks that do not fill 64 elements.
using Anneal.Training.Quantization;
using Anneal.Training.Native;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Quantization;

public sealed class Nf4Tests
{
    readonly ITestOutputHelper output;

    public Nf4Tests(ITestOutputHelper output)
    {
        this.output = output;
        NativeLibraries.EnsureTorchLoaded();
    }

    [Fact]
    public void Packs_the_nearest_code_with_the_even_element_in_the_high_nibble()
    {
        // Block 0 (absmax 1): 1 → 15, −1 → 0, 0 → 7, 0.5 → 12 (0.4407; the mid-point to 0.5626 is
        // 0.5017), −0.3 → 4 (−0.2844), 0 → 7, then zeros (7). Block 1 (absmax 0.2): −0.2 → 0, 0.2 → 15,
        // 0.1 → 0.5 of absmax → 12, 0.2·0.0796 → 8.
        var values = new float[128];
        float[] head = [1f, -1f, 0f, 0.5f, -0.3f, 0f];
        head.CopyTo(values, 0);
        float[] second = [-0.2f, 0.2f, 0.1f, 0.2f * 0.07958029955625534f];
        second.CopyTo(values, 64);
        using var w = tensor(values).view(2, 64);
        using var q = Nf4.Quantize(w);
        var bytes = q.Packed.data<byte>().ToArray();
        Assert.Equal(64, bytes.Length);
        Assert.Equal(new byte[] { 0xF0, 0x7C, 0x47 }, bytes[..3]);
        Assert.All(bytes[3..32], b => Assert.Equal(0x77, b));
        Assert.Equal(new byte[] { 0x0F, 0xC8 }, bytes[32..34]);
        Assert.All(bytes[34..], b => Assert.Equal(0x77, b));

        // Decoding gives the code values times the block scale (the scales go through 8 bits, so
        // they come back within half a step of the dynamic map).
        using var back = q.Dequantize(ScalarType.Float32);
        var d = back.data<float>().ToArray();
        Assert.Equal(1.0, d[0], 2e-3);
        Assert.Equal(-1.0, d[1], 2e-3);
        Assert.Equal(0.0, d[2]);
        Assert.Equal(0.44070982933044434, d[3], 2e-3);
        Assert.Equal(-0.28444138169288635, d[4], 2e-3);
        // Block 1's scale is the negative extreme of the centred scales: the map's −0.99297 brings it back 1.4 % high.
        Assert.Equal(0.2 * 0.44070982933044434, d[66], 2e-3);
        Assert.Equal(-0.2, d[64], 4e-3);
    }

    [Fact]
    public void Scales_use_bitsandbytes_signed_dynamic_map()
    {
        var map = Nf4.DynamicMap;
        Assert.Equal(256, map.Length);
        Assert.True(map.Zip(map.Skip(1)).All(p => p.First < p.Second), "the map must be strictly increasing");
        Assert.Equal(1f, map[^1]);
        Assert.Equal(0f, map[127]);
        // Largest negative value: the last mid-point of linspace(0.1, 1, 65), i.e. 1 − 0.9/128.
        Assert.Equal(-(1 - 0.9 / 128), map[0], 1e-6);
        // Smallest magnitude: 1e-6 · (0.1 + 1) / 2.
        Assert.Equal(0.55e-6, map[128], 1e-12);
    }

    [Fact]
    public void Gaussian_round_trip_error_is_that_of_bitsandbytes()
    {
        using var gen = new Generator(7);
        using var w = randn([1024, 1024], generator: gen);
        using var q = Nf4.Quantize(w);
        using var back = q.Dequantize(ScalarType.Float32);
        var rms = (back - w).pow(2).mean().sqrt().item<float>() / w.pow(2).mean().sqrt().item<float>();
        var bits = q.Bytes * 8.0 / q.Count;
        output.WriteLine($"relative RMS error {rms:F4}, {bits:F3} bits per weight");
        Assert.InRange(rms, 0.090, 0.094);
        Assert.InRange(bits, 4.12, 4.13);

        // The double-quantised scales are within 1.5 % of the true block absmax.
        using var trueScale = w.view(-1, Nf4.BlockSize).abs().amax([1L]);
        using var scale = q.Absmax();
        var worst = ((scale - trueScale).abs() / trueScale).max().item<float>();
        output.WriteLine($"worst relative scale error {worst:E2}");
        Assert.True(worst < 0.015, $"scale error {worst}");
    }

    [Fact]
    public void A_partial_last_block_is_quantised_like_a_zero_padded_one()
    {
        using var gen = new Generator(3);
        using var w = randn([3, 50], generator: gen);                 // 150 = 2 blocks + 22
        using var q = Nf4.Quantize(w);
        using var padded = Nf4.Quantize(nn.functional.pad(w.view(-1), [0, 42]));
        Assert.Equal(96, q.Packed.shape[0]);
        Assert.True(TestTensors.Same(q.Packed, padded.Packed));
        using var back = q.Dequantize(ScalarType.Float32);
        Assert.Equal([3, 50], back.shape);
        using var full = padded.Dequantize(ScalarType.Float32);
        Assert.True(TestTensors.Same(back.view(-1), full.narrow(0, 0, 150)));
    }

    [Fact]
    public void Zeros_is_what_quantising_zeros_gives()
    {
        using var z = Nf4Weight.Zeros([64, 300], CPU);
        using var q = Nf4.Quantize(zeros(64, 300));
        Assert.True(TestTensors.Same(z.Packed, q.Packed));
        Assert.True(TestTensors.Same(z.QuantisedAbsmax, q.QuantisedAbsmax));
        using var back = z.Dequantize(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, back.dtype);
        Assert.Equal(0, back.abs().max().to(ScalarType.Float32).item<float>());
    }

    [Fact]
    public void Bfloat16_weights_and_tables_agree_with_the_fp32_path()
    {
        using var gen = new Generator(11);
        using var w = randn([128, 256], generator: gen) * 0.02;
        using var q32 = Nf4.Quantize(w);
        // Dequantising into bf16 differs from fp32 by bf16 rounding only: the table value, the scale and
        // their product are each rounded (unit round-off 2^-8), so at most 3·2^-8 relative.
        using var a = q32.Dequantize(ScalarType.Float32);
        using var b = q32.Dequantize(ScalarType.BFloat16);
        var relative = ((a - b.to(ScalarType.Float32)).abs() / a.abs().clamp_min(1e-12)).max().item<float>();
        output.WriteLine($"bf16 vs fp32 dequantisation: worst relative difference {relative:E2}");
        Assert.True(relative <= 3 * Math.Pow(2, -8), $"relative difference {relative}");
        // Quantising the bf16-rounded weight picks the same codes except where rounding crosses a mid-point.
        using var q16 = Nf4.Quantize(w.to(ScalarType.BFloat16));
        var same = q16.Packed.eq(q32.Packed).to(ScalarType.Float32).mean().item<float>();
        output.WriteLine($"bytes equal after bf16 rounding of the input: {same:P2}");
        Assert.True(same > 0.99, $"only {same:P2} of the bytes agree");
    }

    [Fact]
    public void Integer_weights_are_refused()
    {
        using var w = zeros(4, 64, ScalarType.Int32);
        var e = Assert.Throws<ArgumentException>(() => Nf4.Quantize(w));
        Assert.Contains("Int32", e.Message);
    }
}
