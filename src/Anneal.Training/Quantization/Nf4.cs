// 4-bit NormalFloat (NF4) weights as QLoRA (Dettmers et al. 2023) and bitsandbytes store them, so a
// packed weight made here and one made by bitsandbytes' quantize_4bit(quant_type="nf4",
// compress_statistics=True) are interchangeable byte for byte:
//   - the flattened weight is cut into blocks of 64; each block keeps its absmax as scale and every
//     element the index (0..15) of the code-book value nearest to w / absmax;
//   - two indices per byte, the even element in the HIGH nibble;
//   - double quantisation of the scales: offset = mean(absmax), then (absmax − offset) is quantised
//     block-wise (blocks of 256) to 8 bits with bitsandbytes' signed dynamic map, keeping one fp32
//     absmax per 256 scales.
// Cost: 4 + 8/64 + 32/(64·256) = 4.127 bits per weight (0.516 bytes).
// Dequantisation uses plain libtorch ops: a [256, 2] table of value pairs indexed by the packed
// byte (one index_select gives both elements of a byte), times the block's scale. On an H100 that
// measured 0.34 ms for a 12288×4096 weight (see SCALEOUT-QLORA.md §C).
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Quantization;

public static class Nf4
{
    public const int BlockSize = 64;
    /// <summary>Scales per block of the second (8-bit) quantisation.</summary>
    public const int NestedBlockSize = 256;

    /// <summary>bitsandbytes' NF4 code book (functional.get_4bit_type("nf4")): normalised quantiles of N(0, 1).</summary>
    public static readonly float[] CodeBook =
    [
        -1f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1f,
    ];

    /// <summary>
    /// bitsandbytes' signed 8-bit dynamic map (functional.create_dynamic_map(signed=True,
    /// max_exponent_bits=7, total_bits=8)), sorted: for i = 0..6 the 2^i midpoints of
    /// linspace(0.1, 1, 2^i + 1) scaled by 10^(i−6), with both signs, plus 0 and 1.
    /// </summary>
    public static readonly float[] DynamicMap = BuildDynamicMap();

    static float[] BuildDynamicMap()
    {
        var data = new List<float>();
        for (var i = 0; i < 7; i++)
        {
            var items = (1 << i) + 1;
            var boundaries = Enumerable.Range(0, items).Select(k => 0.1f + (1f - 0.1f) * k / (items - 1)).ToArray();
            var scale = (float)Math.Pow(10, i - 6);
            for (var k = 0; k + 1 < items; k++)
            {
                var mean = (boundaries[k] + boundaries[k + 1]) / 2f;
                data.Add(scale * mean);
                data.Add(-scale * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return data.ToArray();
    }

    /// <summary>Mid-points between consecutive sorted code values: bucketize against them picks the nearest value (ties go to the lower one, as bitsandbytes' `x > threshold` tests do).</summary>
    static float[] MidPoints(float[] sorted) =>
        Enumerable.Range(0, sorted.Length - 1).Select(i => (sorted[i] + sorted[i + 1]) / 2f).ToArray();

    static readonly float[] CodeMidPoints = MidPoints(CodeBook);
    static readonly float[] DynamicMidPoints = MidPoints(DynamicMap);

    /// <summary>Weights quantised per chunk: bounds the fp32 working copy (64 MiB) whatever the layer's size.</summary>
    const long ChunkBlocks = 1L << 18;

    /// <summary>
    /// Quantises a weight (any float dtype, any device; quantised where it lies). The element count
    /// need not be a multiple of 64: the last block is padded with zeros, which leaves its absmax
    /// unchanged (bitsandbytes takes the absmax over the valid elements only).
    /// </summary>
    public static Nf4Weight Quantize(Tensor weight)
    {
        if (!weight.is_floating_point())
            throw new ArgumentException($"NF4 quantises floating-point weights; got {weight.dtype}.", nameof(weight));
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var device = weight.device;
        var flat = weight.detach().reshape(-1);
        long count = flat.shape[0];
        long blocks = (count + BlockSize - 1) / BlockSize;
        var packed = empty(blocks * BlockSize / 2, ScalarType.Byte, device: device);
        var absmax = empty(blocks, ScalarType.Float32, device: device);
        var mid = tensor(CodeMidPoints, device: device);
        for (long first = 0; first < blocks; first += ChunkBlocks)
        {
            using var chunkScope = NewDisposeScope();
            long n = Math.Min(ChunkBlocks, blocks - first);
            long start = first * BlockSize, valid = Math.Min(n * BlockSize, count - start);
            var x = flat.narrow(0, start, valid).to(ScalarType.Float32);
            if (valid < n * BlockSize) x = nn.functional.pad(x, [0, n * BlockSize - valid]);
            x = x.view(n, BlockSize);                                                    // (n, 64)
            var scale = x.abs().amax([1L]);                                              // (n)
            absmax.narrow(0, first, n).copy_(scale);
            // bitsandbytes multiplies by the reciprocal; an all-zero block maps to code 0.0 (index 7).
            var inverse = scale.reciprocal().masked_fill_(scale.eq(0), 0);
            var index = bucketize(x * inverse.unsqueeze(1), mid);                        // (n, 64) int64 in 0..15
            var pairs = index.view(-1, 2);
            var bytes = (pairs.select(1, 0) * 16 + pairs.select(1, 1)).to(ScalarType.Byte);  // even element high
            packed.narrow(0, start / 2, n * BlockSize / 2).copy_(bytes);
        }

        // Double quantisation of the scales (bitsandbytes: compress_statistics=True).
        var offset = absmax.mean().item<float>();
        long nested = (blocks + NestedBlockSize - 1) / NestedBlockSize;
        var centred = nn.functional.pad(absmax - offset, [0, nested * NestedBlockSize - blocks]).view(nested, NestedBlockSize);
        var nestedAbsmax = centred.abs().amax([1L]);                                     // (nested)
        var nestedInverse = nestedAbsmax.reciprocal().masked_fill_(nestedAbsmax.eq(0), 0);
        var quantisedAbsmax = bucketize(centred * nestedInverse.unsqueeze(1), tensor(DynamicMidPoints, device: device))
            .to(ScalarType.Byte).view(-1).narrow(0, 0, blocks).contiguous();
        // The weight owns its tensors (disposed with it), whatever dispose scope the caller has open.
        return new Nf4Weight(weight.shape, packed.DetachFromDisposeScope(), quantisedAbsmax.DetachFromDisposeScope(),
            nestedAbsmax.DetachFromDisposeScope(), offset);
    }

    static readonly Dictionary<(DeviceType, int, ScalarType), (Tensor Pairs, Tensor Map)> Tables = new();

    /// <summary>
    /// Per device and dtype, built once: the pair table [256, 2] = (NF4[b >> 4], NF4[b &amp; 15]) for
    /// every byte b, and the dynamic map [256] (fp32) that decodes the quantised scales.
    /// </summary>
    internal static (Tensor Pairs, Tensor Map) LookupTables(Device device, ScalarType dtype)
    {
        var key = (device.type, device.index, dtype);
        lock (Tables)
        {
            if (Tables.TryGetValue(key, out var t)) return t;
            var pairs = new float[512];
            for (var b = 0; b < 256; b++) { pairs[2 * b] = CodeBook[b >> 4]; pairs[2 * b + 1] = CodeBook[b & 15]; }
            // Lives for the process: taken out of any dispose scope the caller has open.
            var table = tensor(pairs).view(256, 2).to(dtype, device).DetachFromDisposeScope();
            var map = tensor(DynamicMap).to(device).DetachFromDisposeScope();
            Tables[key] = (table, map);
            return (table, map);
        }
    }
}

/// <summary>
/// One weight in NF4 with double-quantised scales (see <see cref="Nf4"/>). Owns its tensors.
/// Its tensors live outside every dispose scope. Packed [blocks·32] uint8, QuantisedAbsmax [blocks] uint8 (dynamic-map indices),
/// NestedAbsmax [⌈blocks/256⌉] fp32, Offset = mean of the block scales.
/// </summary>
public sealed class Nf4Weight(long[] shape, Tensor packed, Tensor quantisedAbsmax, Tensor nestedAbsmax, float offset) : IDisposable
{
    public long[] Shape { get; } = shape;
    public long Count { get; } = shape.Aggregate(1L, (a, b) => a * b);
    public Tensor Packed { get; } = packed;
    public Tensor QuantisedAbsmax { get; } = quantisedAbsmax;
    public Tensor NestedAbsmax { get; } = nestedAbsmax;
    public float Offset { get; } = offset;
    public Device Device => Packed.device;

    /// <summary>Bytes held (packed weights and both levels of scales).</summary>
    public long Bytes => Packed.numel() + QuantisedAbsmax.numel() + NestedAbsmax.numel() * 4 + 4;

    /// <summary>The block scales [blocks], fp32: map[q] · nested_absmax[block / 256] + offset.</summary>
    public Tensor Absmax()
    {
        using var scope = NewDisposeScope();
        var (_, map) = Nf4.LookupTables(Device, ScalarType.Float32);
        long blocks = QuantisedAbsmax.shape[0];
        var nested = NestedAbsmax.repeat_interleave(Nf4.NestedBlockSize, dim: 0).narrow(0, 0, blocks);
        var scale = map.index_select(0, QuantisedAbsmax.to(ScalarType.Int32)) * nested + Offset;
        return scale.MoveToOuterDisposeScope();
    }

    /// <summary>The weight in <paramref name="dtype"/>, shaped as quantised: pair table · block scale.</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (pairs, _) = Nf4.LookupTables(Device, dtype);
        var values = pairs.index_select(0, Packed.to(ScalarType.Int32)).view(-1, Nf4.BlockSize);   // (blocks, 64)
        values.mul_(Absmax().to(dtype).unsqueeze(1));
        var flat = values.view(-1);
        if (flat.shape[0] != Count) flat = flat.narrow(0, 0, Count);
        return flat.view(Shape).MoveToOuterDisposeScope();
    }

    /// <summary>The all-zero weight (what quantising zeros gives), allocated directly in packed form.</summary>
    public static Nf4Weight Zeros(long[] shape, Device device)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        long blocks = (count + Nf4.BlockSize - 1) / Nf4.BlockSize;
        long nested = (blocks + Nf4.NestedBlockSize - 1) / Nf4.NestedBlockSize;
        var zeroCode = Array.IndexOf(Nf4.CodeBook, 0f);
        var zeroScale = Array.IndexOf(Nf4.DynamicMap, 0f);
        return new Nf4Weight(shape,
            full(blocks * Nf4.BlockSize / 2, zeroCode * 16 + zeroCode, ScalarType.Byte, device).DetachFromDisposeScope(),
            full(blocks, zeroScale, ScalarType.Byte, device).DetachFromDisposeScope(),
            zeros(nested, ScalarType.Float32, device).DetachFromDisposeScope(), 0f);
    }

    public void Dispose()
    {
        Packed.Dispose();
        QuantisedAbsmax.Dispose();
        NestedAbsmax.Dispose();
    }
}
