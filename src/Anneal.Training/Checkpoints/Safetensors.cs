// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw
// little-endian tensor bytes. We read the header ourselves and copy each tensor straight into
// tensor memory (no per-KB buffering), and pad the header with spaces to a multiple of 8 bytes
// when writing, as Hugging Face does, so the data section stays aligned.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Checkpoints;

/// <summary>One tensor's entry in a safetensors header; offsets are relative to the data section.</summary>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

public sealed class SafetensorsFile
{
    public string Path { get; }
    public long DataStart { get; }
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    SafetensorsFile(string path, long dataStart, Dictionary<string, SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path; DataStart = dataStart; Entries = entries; Metadata = metadata;
    }

    // Copies go through at most 256 MiB spans (Tensor.bytes is an int-indexed Span).
    const long ChunkBytes = 256L << 20;

    public static SafetensorsFile Open(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.Read(lengthBytes) != 8)
            throw new InvalidDataException($"{path}: not a safetensors file (shorter than 8 bytes)");
        var headerLength = BitConverter.ToInt64(lengthBytes);
        if (headerLength <= 0 || headerLength > 100_000_000 || 8 + headerLength > stream.Length)
            throw new InvalidDataException($"{path}: not a safetensors file (header length {headerLength}, file length {stream.Length})");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        JsonObject json;
        try { json = JsonNode.Parse(header)!.AsObject(); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: safetensors header is not valid JSON ({e.Message})"); }

        var entries = new Dictionary<string, SafetensorsEntry>();
        var metadata = new Dictionary<string, string>();
        var dataLength = stream.Length - 8 - headerLength;
        foreach (var (name, node) in json)
        {
            if (name == "__metadata__")
            {
                foreach (var (k, v) in node!.AsObject()) metadata[k] = v?.GetValue<string>() ?? "";
                continue;
            }
            var o = node!.AsObject();
            var offsets = o["data_offsets"]!.AsArray();
            var entry = new SafetensorsEntry(name, o["dtype"]!.GetValue<string>(),
                o["shape"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray(),
                offsets[0]!.GetValue<long>(), offsets[1]!.GetValue<long>());
            var expected = entry.Shape.Aggregate(1L, (a, b) => a * b) * ElementSize(entry.DType, path, name);
            if (entry.End - entry.Begin != expected || entry.End > dataLength || entry.Begin < 0)
                throw new InvalidDataException($"{path}: tensor {name} has offsets [{entry.Begin}, {entry.End}] but needs {expected} bytes within {dataLength}");
            entries[name] = entry;
        }
        return new SafetensorsFile(path, 8 + headerLength, entries, metadata);
    }

    /// <summary>Reads one tensor into CPU memory in its stored dtype, then moves/casts it.</summary>
    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null)
    {
        var e = Entries[name];
        var stored = ToScalarType(e.DType, Path, name);
        var cpu = torch.empty(e.Shape, dtype: stored);
        using (var stream = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess))
        {
            stream.Position = DataStart + e.Begin;
            CopyBytes(cpu, span => stream.ReadExactly(span));
        }
        if ((dtype == null || dtype == stored) && (device == null || device.type == DeviceType.CPU))
            return cpu;
        using (cpu)
            return cpu.to(dtype ?? stored, device ?? torch.CPU);
    }

    /// <summary>Writes tensors (any device, contiguous or not) into one file, header padded to 8 bytes.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var (name, t) in list)
        {
            var bytes = t.numel() * t.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = DTypeName(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (headerBytes.Length + 7) / 8 * 8;

        var tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            stream.Write(BitConverter.GetBytes((long)padded));
            stream.Write(headerBytes);
            for (var i = headerBytes.Length; i < padded; i++) stream.WriteByte((byte)' ');
            foreach (var (_, t) in list)
            {
                using var scope = NewDisposeScope();
                var cpu = t.detach().to(torch.CPU).contiguous();
                CopyBytes(cpu, span => stream.Write(span));
            }
        }
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Runs `copy` over the tensor's bytes in chunks (the tensor is CPU and contiguous).</summary>
    static void CopyBytes(Tensor cpu, SpanAction copy)
    {
        using var scope = NewDisposeScope();
        var flat = cpu.view(-1);
        var elementSize = cpu.ElementSize;
        var total = flat.shape[0];
        var perChunk = Math.Max(1, ChunkBytes / elementSize);
        for (long start = 0; start < total; start += perChunk)
        {
            var n = Math.Min(perChunk, total - start);
            copy(flat.narrow(0, start, n).bytes);
        }
    }

    delegate void SpanAction(Span<byte> span);

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"safetensors: dtype {t} is not supported"),
    };

    static ScalarType ToScalarType(string name, string path, string tensor) => name switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new InvalidDataException($"{path}: tensor {tensor} has dtype {name}; supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL"),
    };

    static long ElementSize(string name, string path, string tensor) => name switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => throw new InvalidDataException($"{path}: tensor {tensor} has dtype {name}; supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL"),
    };
}

/// <summary>The tensors of a model folder: `model.safetensors`, or the shards named by `model.safetensors.index.json`.</summary>
public sealed class SafetensorsSet
{
    readonly Dictionary<string, SafetensorsFile> byTensor = new();

    public IEnumerable<string> Names => byTensor.Keys;
    public bool Contains(string name) => byTensor.ContainsKey(name);
    public SafetensorsEntry Entry(string name) => byTensor[name].Entries[name];
    public Tensor Read(string name, ScalarType? dtype = null, Device? device = null) => byTensor[name].Read(name, dtype, device);

    /// <summary>Opens a folder's weights; a missing file is named in the error.</summary>
    public static SafetensorsSet OpenFolder(string folder, string fileName = "model.safetensors")
    {
        var set = new SafetensorsSet();
        var single = System.IO.Path.Combine(folder, fileName);
        var index = System.IO.Path.Combine(folder, fileName + ".index.json");
        if (File.Exists(single))
        {
            var f = SafetensorsFile.Open(single);
            foreach (var name in f.Entries.Keys) set.byTensor[name] = f;
        }
        else if (File.Exists(index))
        {
            var map = JsonNode.Parse(File.ReadAllText(index))?["weight_map"]?.AsObject()
                ?? throw new InvalidDataException($"{index}: no \"weight_map\" object");
            var files = new Dictionary<string, SafetensorsFile>();
            foreach (var (name, shardNode) in map)
            {
                var shard = shardNode!.GetValue<string>();
                if (!files.TryGetValue(shard, out var f))
                {
                    var shardPath = System.IO.Path.Combine(folder, shard);
                    if (!File.Exists(shardPath))
                        throw new FileNotFoundException($"{folder}: shard {shard} named in {fileName}.index.json is missing", shardPath);
                    files[shard] = f = SafetensorsFile.Open(shardPath);
                }
                if (!f.Entries.ContainsKey(name))
                    throw new InvalidDataException($"{index}: tensor {name} is mapped to {shard}, which does not hold it");
                set.byTensor[name] = f;
            }
        }
        else
            throw new FileNotFoundException($"{folder}: neither {fileName} nor {fileName}.index.json exists", single);
        return set;
    }
}
