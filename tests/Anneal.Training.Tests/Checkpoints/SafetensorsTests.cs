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

public sealed class ModelFolderTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-mf-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Bf16_model_saves_and_loads_bit_exactly_without_a_tied_lm_head()
    {
        using var model = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.BFloat16);
        var output = Path.Combine(dir, "saved");
        ModelFolder.Save(model, output, TinyFixture.ModelDir);

        var file = SafetensorsFile.Open(Path.Combine(output, "model.safetensors"));
        Assert.DoesNotContain("lm_head.weight", file.Entries.Keys);
        Assert.All(file.Entries.Values, e => Assert.Equal("BF16", e.DType));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.Equal("bfloat16", config["torch_dtype"]!.GetValue<string>());
        Assert.True(config["tie_word_embeddings"]!.GetValue<bool>());
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            Assert.True(File.Exists(Path.Combine(output, f)), f);

        using var back = ModelFolder.Load(output, torch.CPU, torch.ScalarType.BFloat16);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in back.named_parameters())
            Assert.True(TestTensors.Same(original[name], p), name);
    }

    [Fact]
    public void Large_models_are_written_in_shards_with_an_index()
    {
        using var model = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        var output = Path.Combine(dir, "sharded");
        ModelFolder.Save(model, output, TinyFixture.ModelDir, maxShardBytes: 1_000_000);   // ~3.4 MB of weights

        Assert.False(File.Exists(Path.Combine(output, "model.safetensors")));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "model.safetensors.index.json")))!;
        var files = index["weight_map"]!.AsObject().Select(kv => kv.Value!.GetValue<string>()).Distinct().Order().ToList();
        Assert.True(files.Count >= 3, string.Join(", ", files));
        Assert.Equal($"model-00001-of-{files.Count:D5}.safetensors", files[0]);
        Assert.Equal(model.parameters().Sum(p => p.numel() * 4), index["metadata"]!["total_size"]!.GetValue<long>());

        using var back = ModelFolder.Load(output, torch.CPU, torch.ScalarType.Float32);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in back.named_parameters())
            Assert.True(TestTensors.Same(original[name], p), name);
    }

    [Fact]
    public void Config_reads_the_real_qwen3_fields_and_refuses_other_architectures()
    {
        // Qwen/Qwen3-0.6B config.json (huggingface.co), with eos_token_id given as a list as some checkpoints do.
        var path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, """
            {"architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643,
             "eos_token_id": [151645, 151643], "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
             "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
             "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
             "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
             "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}
            """);
        var c = Anneal.Training.Model.Qwen3Config.Load(path);
        Assert.Equal((1024, 28, 16, 8, 128, 3072, 151936, 40960), (c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.IntermediateSize, c.VocabSize, c.MaxPositionEmbeddings));
        Assert.Equal(1e6, c.RopeTheta);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(151645, c.EosTokenId);

        File.WriteAllText(path, File.ReadAllText(path).Replace("\"qwen3\"", "\"qwen3_moe\""));
        var e = Assert.Throws<TrainerUserException>(() => Anneal.Training.Model.Qwen3Config.Load(path));
        Assert.Contains("model_type \"qwen3_moe\"", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Shape_mismatch_names_the_tensor_and_both_shapes()
    {
        var output = Path.Combine(dir, "bad");
        Directory.CreateDirectory(output);
        foreach (var f in Directory.GetFiles(TinyFixture.ModelDir)) File.Copy(f, Path.Combine(output, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        config["intermediate_size"] = 200;
        File.WriteAllText(Path.Combine(output, "config.json"), config.ToJsonString());
        var e = Assert.Throws<TrainerUserException>(() => ModelFolder.Load(output, torch.CPU, torch.ScalarType.Float32));
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", e.Message);
        Assert.Contains("[384, 128]", e.Message);
        Assert.Contains("[200, 128]", e.Message);
    }
}
