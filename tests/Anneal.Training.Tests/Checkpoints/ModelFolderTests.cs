// Hugging Face model folders: config.json reading, bf16 save/load, tied embeddings, shards, and
// errors that name the tensor and both shapes.
using System.Text.Json.Nodes;
using Anneal.Training.Checkpoints;
using Anneal.Training.Native;
using TorchSharp;

namespace Anneal.Training.Tests.Checkpoints;

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
    public void Saved_config_names_the_saved_precision_under_both_dtype_keys()
    {
        // A source that says bfloat16 under transformers' newer key, saved as float32.
        var source = Path.Combine(dir, "source");
        Directory.CreateDirectory(source);
        foreach (var f in Directory.GetFiles(TinyFixture.ModelDir)) File.Copy(f, Path.Combine(source, Path.GetFileName(f)));
        var sourceConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        sourceConfig["dtype"] = "bfloat16";
        File.WriteAllText(Path.Combine(source, "config.json"), sourceConfig.ToJsonString());
        using var model = ModelFolder.Load(source, torch.CPU, torch.ScalarType.Float32);
        var output = Path.Combine(dir, "saved32");
        ModelFolder.Save(model, output, source);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.Equal(("float32", "float32"), (config["torch_dtype"]!.GetValue<string>(), config["dtype"]!.GetValue<string>()));
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
