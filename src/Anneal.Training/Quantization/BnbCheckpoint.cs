// Linear weights that bitsandbytes saved in 4-bit NF4 (the `*-bnb-4bit` folders on the Hub). For a
// Linear4bit `…q_proj`, transformers writes (bitsandbytes QuantState.as_dict(packed=True)):
//   …q_proj.weight                                  uint8 [n/2, 1]  packed NF4, even element high
//   …q_proj.weight.absmax                           uint8 [blocks]  (fp32 when not double-quantised)
//   …q_proj.weight.nested_absmax                    fp32 [⌈blocks/256⌉]
//   …q_proj.weight.nested_quant_map                 fp32 [256]  the signed dynamic map
//   …q_proj.weight.quant_map                        fp32 [16]   the NF4 code book
//   …q_proj.weight.quant_state.bitsandbytes__nf4    uint8 bytes of a JSON object: quant_type,
//                                                   blocksize, dtype, shape, nested_blocksize,
//                                                   nested_offset, nested_dtype
// This is the layout Nf4Weight holds, so the bytes are taken as they are; only block size 64 and
// the standard maps are accepted (anything else is refused naming the tensor). Scales saved
// without double quantisation are double-quantised on load (their 8-bit rounding is the only change).
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Training.Checkpoints;
using static TorchSharp.torch;

namespace Anneal.Training.Quantization;

public static class BnbCheckpoint
{
    public const string QuantStateSuffix = ".quant_state.bitsandbytes__nf4";
    const string Fp4StateSuffix = ".quant_state.bitsandbytes__fp4";

    /// <summary>Whether `name` (a linear's `….weight`) is stored in bitsandbytes' 4-bit layout.</summary>
    public static bool IsQuantised(SafetensorsSet set, string name) =>
        set.Contains(name + QuantStateSuffix) || set.Contains(name + Fp4StateSuffix);

    /// <summary>Reads a 4-bit weight of shape <paramref name="shape"/> onto <paramref name="device"/>.</summary>
    public static Nf4Weight Read(SafetensorsSet set, string name, long[] shape, Device device)
    {
        string Problem(string what) => $"tensor {name} (bitsandbytes 4-bit): {what}";
        if (set.Contains(name + Fp4StateSuffix))
            throw new InvalidDataException(Problem("quant_type fp4 is not supported; only nf4 is"));
        JsonObject state;
        using (var bytes = set.Read(name + QuantStateSuffix))
        {
            try { state = JsonNode.Parse(Encoding.UTF8.GetString(bytes.data<byte>().ToArray()))!.AsObject(); }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException)
            { throw new InvalidDataException(Problem($"{QuantStateSuffix[1..]} is not a JSON object ({e.Message})")); }
        }
        var blocksize = state["blocksize"]?.GetValue<int>();
        if (blocksize != Nf4.BlockSize)
            throw new InvalidDataException(Problem($"blocksize {blocksize?.ToString() ?? "missing"}; only {Nf4.BlockSize} is supported"));
        var stored = state["shape"]?.AsArray().Select(x => x!.GetValue<long>()).ToArray();
        if (stored is null || !stored.SequenceEqual(shape))
            throw new InvalidDataException(Problem($"quant_state shape [{string.Join(", ", stored ?? [])}], config.json implies [{string.Join(", ", shape)}]"));
        CheckMap(set, name + ".quant_map", Nf4.CodeBook, Problem);

        long count = shape.Aggregate(1L, (a, b) => a * b);
        long blocks = (count + Nf4.BlockSize - 1) / Nf4.BlockSize;
        using var scope = NewDisposeScope();
        var packed = set.Read(name).view(-1);
        if (packed.dtype != ScalarType.Byte || packed.shape[0] != (count + 1) / 2)
            throw new InvalidDataException(Problem($"packed weight is {packed.dtype} [{packed.shape[0]}]; expected uint8 [{(count + 1) / 2}]"));
        // Nf4Weight keeps whole blocks: pad a partial last block with zero codes (never read back).
        if (packed.shape[0] != blocks * Nf4.BlockSize / 2)
            packed = cat([packed, full(blocks * Nf4.BlockSize / 2 - packed.shape[0], 0x77, ScalarType.Byte)]);
        var absmax = set.Read(name + ".absmax").view(-1);
        if (absmax.shape[0] != blocks)
            throw new InvalidDataException(Problem($"absmax has {absmax.shape[0]} entries; {blocks} blocks expected"));
        Nf4Weight weight;
        if (absmax.dtype == ScalarType.Byte)
        {
            if (state["nested_blocksize"]?.GetValue<int>() != Nf4.NestedBlockSize)
                throw new InvalidDataException(Problem($"nested_blocksize {state["nested_blocksize"]?.ToJsonString() ?? "missing"}; only {Nf4.NestedBlockSize} is supported"));
            CheckMap(set, name + ".nested_quant_map", Nf4.DynamicMap, Problem);
            var offset = state["nested_offset"]?.GetValue<float>() ?? throw new InvalidDataException(Problem("nested_offset is missing"));
            var nested = set.Read(name + ".nested_absmax", ScalarType.Float32).view(-1);
            weight = new Nf4Weight(shape, packed.to(device).DetachFromDisposeScope(), absmax.to(device).DetachFromDisposeScope(),
                nested.to(device).DetachFromDisposeScope(), offset);
        }
        else
        {
            var (q, nested, offset) = Nf4.CompressScales(absmax.to(ScalarType.Float32, device));
            weight = new Nf4Weight(shape, packed.to(device).DetachFromDisposeScope(), q, nested, offset);
        }
        return weight;
    }

    static void CheckMap(SafetensorsSet set, string key, float[] expected, Func<string, string> problem)
    {
        if (!set.Contains(key)) throw new InvalidDataException(problem($"{key} is missing"));
        using var map = set.Read(key, ScalarType.Float32);
        var values = map.data<float>().ToArray();
        if (values.Length != expected.Length || values.Zip(expected).Any(p => Math.Abs(p.First - p.Second) > 1e-6))
            throw new InvalidDataException(problem($"{key} is not the standard map this reader decodes ({values.Length} values, expected {expected.Length})"));
    }

    /// <summary>The tensors bitsandbytes would save for <paramref name="weight"/> under `name` (double-quantised scales).</summary>
    public static List<(string Name, Tensor Tensor)> Tensors(string name, Nf4Weight weight)
    {
        var json = new JsonObject
        {
            ["quant_type"] = "nf4", ["blocksize"] = Nf4.BlockSize, ["dtype"] = "bfloat16",
            ["shape"] = new JsonArray(weight.Shape.Select(s => (JsonNode)s).ToArray()),
            ["nested_blocksize"] = Nf4.NestedBlockSize, ["nested_offset"] = weight.Offset, ["nested_dtype"] = "float32",
        };
        var packed = weight.Packed.narrow(0, 0, (weight.Count + 1) / 2).view(-1, 1);
        return
        [
            (name, packed),
            (name + ".absmax", weight.QuantisedAbsmax),
            (name + ".nested_absmax", weight.NestedAbsmax),
            (name + ".nested_quant_map", tensor(Nf4.DynamicMap)),
            (name + ".quant_map", tensor(Nf4.CodeBook)),
            (name + QuantStateSuffix, tensor(Encoding.UTF8.GetBytes(json.ToJsonString()))),
        ];
    }
}
