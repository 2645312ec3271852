// Folders saved by bitsandbytes in 4-bit (`*-bnb-4bit`): the tiny model's decoder linears written in
// that layout load as QLoRA bases byte for byte (the same logits as quantising the original weights),
// dequantise into LoRA and full models, and a layout this reader cannot decode is refused naming
// the tensor.
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Training.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Quantization;

[Collection(TorchRandomCollection.Name)]
public sealed class BnbCheckpointTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-bnb-").FullName;
    public BnbCheckpointTests() => NativeLibraries.EnsureTorchLoaded();
    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>The tiny model with its decoder linears in bitsandbytes' layout; `edit` may change the tensors written.</summary>
    string WriteBnbFolder(Action<List<(string Name, Tensor Tensor)>>? edit = null)
    {
        var source = SafetensorsSet.OpenFolder(TinyFixture.ModelDir);
        var tensors = new List<(string Name, Tensor Tensor)>();
        var owned = new List<Nf4Weight>();
        foreach (var name in source.Names.Order())
        {
            var t = source.Read(name);
            if (name.EndsWith("_proj.weight"))
            {
                var q = Nf4.Quantize(t);
                owned.Add(q);
                tensors.AddRange(BnbCheckpoint.Tensors(name, q));
            }
            else tensors.Add((name, t.to(ScalarType.BFloat16)));
        }
        edit?.Invoke(tensors);
        var folder = Path.Combine(dir, "tiny-bnb-4bit");
        Directory.CreateDirectory(folder);
        SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), tensors);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyFixture.ModelDir, ModelFolder.ConfigFile)))!.AsObject();
        config["torch_dtype"] = "bfloat16";
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "bitsandbytes", ["load_in_4bit"] = true, ["bnb_4bit_quant_type"] = "nf4",
            ["bnb_4bit_use_double_quant"] = true, ["bnb_4bit_compute_dtype"] = "bfloat16",
        };
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), config.ToJsonString());
        foreach (var q in owned) q.Dispose();
        return folder;
    }

    static Tensor Logits(Qwen3ForCausalLM model)
    {
        model.eval();
        using var _ = no_grad();
        using var ids = tensor(new long[] { 1, 5, 9, 40, 77, 3, 200, 11 }).view(1, -1);
        using var pos = arange(8, dtype: ScalarType.Int64).view(1, -1);
        return model.call(ids, pos, null);
    }

    [Fact]
    public void A_bnb_4bit_folder_loads_as_the_qlora_base_it_was_quantised_from()
    {
        var folder = WriteBnbFolder();
        var lora = new LoraSettings(R: 4);
        // The original's norms and embeddings are fp32; the bnb folder has them in bf16, so compare
        // against the original rounded the same way.
        var rounded = Path.Combine(dir, "rounded");
        Directory.CreateDirectory(rounded);
        File.Copy(Path.Combine(TinyFixture.ModelDir, ModelFolder.ConfigFile), Path.Combine(rounded, ModelFolder.ConfigFile));
        var original = SafetensorsSet.OpenFolder(TinyFixture.ModelDir);
        var roundedTensors = original.Names.Select(n => (n, n.EndsWith("_proj.weight") ? original.Read(n) : original.Read(n, ScalarType.BFloat16).to(ScalarType.Float32))).ToList();
        SafetensorsFile.Write(Path.Combine(rounded, ModelFolder.WeightsFile), roundedTensors);

        using var fromBnb = ModelFolder.Load(folder, CPU, ScalarType.Float32, lora, nf4Base: true);
        using var fromOriginal = ModelFolder.Load(rounded, CPU, ScalarType.Float32, lora, nf4Base: true);
        var layers = fromBnb.modules().OfType<QloraLinear>().Zip(fromOriginal.modules().OfType<QloraLinear>()).ToList();
        Assert.Equal(4 * 7, layers.Count);
        Assert.All(layers, p => Assert.True(TestTensors.Same(p.First.BaseWeight.Packed, p.Second.BaseWeight.Packed)));
        using var a = Logits(fromBnb);
        using var b = Logits(fromOriginal);
        Assert.True(TestTensors.MaxDiff(a, b) < 1e-6, $"logits differ by {TestTensors.MaxDiff(a, b)}");

        // LoRA and full fine-tuning read the same folder dequantised (no adapters yet: the same model).
        using var plain = ModelFolder.Load(folder, CPU, ScalarType.Float32);
        using var c = Logits(plain);
        Assert.True(TestTensors.MaxDiff(a, c) < 1e-5, $"dequantised model differs by {TestTensors.MaxDiff(a, c)}");
    }

    [Fact]
    public void Scales_saved_without_double_quantisation_are_compressed_on_load()
    {
        var folder = WriteBnbFolder();
        // bitsandbytes with compress_statistics=False: fp32 absmax per block, no nested tensors.
        var original = SafetensorsSet.OpenFolder(TinyFixture.ModelDir);
        var bnb = SafetensorsSet.OpenFolder(folder);
        var rewritten = bnb.Names.Where(n => !n.Contains(".nested_")).Select(n =>
        {
            if (!n.EndsWith(".absmax")) return (n, bnb.Read(n));
            using var w = original.Read(n[..^".absmax".Length]);
            return (n, w.view(-1, Nf4.BlockSize).abs().amax([1L]));
        }).ToList();
        SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), rewritten);
        using var model = ModelFolder.Load(folder, CPU, ScalarType.Float32, new LoraSettings(R: 4), nf4Base: true);
        using var reference = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float32, new LoraSettings(R: 4), nf4Base: true);
        var first = model.modules().OfType<QloraLinear>().First().BaseWeight;
        var expected = reference.modules().OfType<QloraLinear>().First().BaseWeight;
        Assert.True(TestTensors.Same(first.Packed, expected.Packed));
        using var x = first.Dequantize(ScalarType.Float32);
        using var y = expected.Dequantize(ScalarType.Float32);
        Assert.True(TestTensors.MaxDiff(x, y) < 1e-6);
    }

    [Fact]
    public void A_layout_this_reader_cannot_decode_is_refused_naming_the_tensor()
    {
        var folder = WriteBnbFolder(tensors =>
        {
            var i = tensors.FindIndex(t => t.Name == "model.layers.1.mlp.up_proj.weight" + BnbCheckpoint.QuantStateSuffix);
            var json = System.Text.Encoding.UTF8.GetString(tensors[i].Tensor.data<byte>().ToArray()).Replace("\"blocksize\":64", "\"blocksize\":128");
            tensors[i] = (tensors[i].Name, tensor(System.Text.Encoding.UTF8.GetBytes(json)));
        });
        var e = Assert.Throws<TrainerUserException>(() => ModelFolder.Load(folder, CPU, ScalarType.Float32, new LoraSettings(R: 4), nf4Base: true));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", e.Message);
        Assert.Contains("blocksize 128; only 64 is supported", e.Message);
    }
}
