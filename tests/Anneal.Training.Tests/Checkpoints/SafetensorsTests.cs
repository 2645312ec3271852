// Safetensors write → read round trips (fp32, bf16, fp16), header layout (8-byte padding) and
// shard loading through model.safetensors.index.json.
using System.Text.Json.Nodes;
using Anneal.Training.Checkpoints;
using Anneal.Training.Native;
using TorchSharp;

namespace Anneal.Training.Tests.Checkpoints;

public sealed class SafetensorsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-st-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData(torch.ScalarType.Float32)]
    [InlineData(torch.ScalarType.BFloat16)]
    [InlineData(torch.ScalarType.Float16)]
    public void Round_trip_keeps_names_shapes_dtypes_and_bits(torch.ScalarType dtype)
    {
        NativeLibraries.EnsureTorchLoaded();
        torch.manual_seed(1);
        var tensors = new (string, torch.Tensor)[]
        {
            ("a.weight", torch.randn(3, 5).to(dtype)),
            ("b", torch.randn(7).to(dtype)),
            ("c.scalar_like", torch.randn(1, 1, 2).to(dtype)),
            ("d.transposed", torch.randn(4, 6).to(dtype).t()),   // not contiguous
        };
        var path = Path.Combine(dir, "x.safetensors");
        SafetensorsFile.Write(path, tensors);

        var bytes = File.ReadAllBytes(path);
        var headerLength = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, headerLength % 8);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)headerLength).ToArray())!.AsObject();
        Assert.Equal(SafetensorsFile.DTypeName(dtype), header["a.weight"]!["dtype"]!.GetValue<string>());
        Assert.Equal(bytes.Length - 8 - headerLength, header["d.transposed"]!["data_offsets"]![1]!.GetValue<long>());

        var file = SafetensorsFile.Open(path);
        Assert.Equal(4, file.Entries.Count);
        foreach (var (name, t) in tensors)
        {
            using var back = file.Read(name);
            Assert.Equal(t.dtype, back.dtype);
            Assert.Equal(t.shape, back.shape);
            Assert.True(TestTensors.Same(t, back), name);
        }
    }

    [Fact]
    public void Read_casts_to_the_requested_dtype()
    {
        NativeLibraries.EnsureTorchLoaded();
        var t = torch.randn(16).to(torch.ScalarType.BFloat16);
        var path = Path.Combine(dir, "y.safetensors");
        SafetensorsFile.Write(path, [("t", t)]);
        using var back = SafetensorsFile.Open(path).Read("t", torch.ScalarType.Float32);
        Assert.Equal(torch.ScalarType.Float32, back.dtype);
        Assert.True(TestTensors.Same(t.to(torch.ScalarType.Float32), back));
    }

    [Fact]
    public void Sharded_folder_is_read_through_the_index()
    {
        NativeLibraries.EnsureTorchLoaded();
        var a = torch.arange(6, dtype: torch.ScalarType.Float32).reshape(2, 3);
        var b = torch.ones(4, dtype: torch.ScalarType.BFloat16);
        SafetensorsFile.Write(Path.Combine(dir, "model-00001-of-00002.safetensors"), [("a", a)]);
        SafetensorsFile.Write(Path.Combine(dir, "model-00002-of-00002.safetensors"), [("b", b)]);
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
            """{"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}""");
        var set = SafetensorsSet.OpenFolder(dir);
        Assert.True(TestTensors.Same(a, set.Read("a")));
        Assert.True(TestTensors.Same(b, set.Read("b")));
    }

    [Fact]
    public void Missing_weights_and_truncated_files_give_clear_errors()
    {
        NativeLibraries.EnsureTorchLoaded();
        var e = Assert.Throws<FileNotFoundException>(() => SafetensorsSet.OpenFolder(dir));
        Assert.Contains("model.safetensors", e.Message);

        var path = Path.Combine(dir, "z.safetensors");
        SafetensorsFile.Write(path, [("t", torch.ones(100))]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^40]);
        var bad = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.Contains("tensor t", bad.Message);
    }
}
