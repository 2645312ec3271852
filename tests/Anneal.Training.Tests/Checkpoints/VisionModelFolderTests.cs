// Qwen3-VL folders: save → load round trip (single file and shards), processor files carried along,
// config errors that name the key.
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;

namespace Anneal.Training.Tests.Checkpoints;

public sealed class VisionModelFolderTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-vmf-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData(ModelFolder.DefaultMaxShardBytes)]
    [InlineData(1_000_000L)]
    public void Saved_folder_loads_back_bit_exactly(long maxShardBytes)
    {
        using var model = VisionModelFolder.Load(TinyFixture.VisionModelDir, torch.CPU, torch.ScalarType.Float32);
        using (torch.no_grad())
            foreach (var (name, p) in model.named_parameters())
                p.add_(0.01 * (name.Length % 5));
        var output = Path.Combine(dir, "saved");
        VisionModelFolder.Save(model, output, TinyFixture.VisionModelDir, maxShardBytes);

        Assert.Equal(maxShardBytes < 10_000_000, File.Exists(Path.Combine(output, "model.safetensors.index.json")));
        foreach (var f in new[] { "config.json", "tokenizer.json", "generation_config.json", "preprocessor_config.json" })
            Assert.True(File.Exists(Path.Combine(output, f)), f);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.Equal("qwen3_vl", config["model_type"]!.GetValue<string>());

        using var back = VisionModelFolder.Load(output, torch.CPU, torch.ScalarType.Float32);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(original.Count, back.named_parameters().Count());
        foreach (var (name, p) in back.named_parameters())
            Assert.True(TestTensors.Same(original[name], p), name);
    }

    [Fact]
    public void Tiny_model_has_two_deepstack_taps_and_a_few_million_parameters_at_most()
    {
        var config = VisionModelFolder.LoadConfig(TinyFixture.VisionModelDir);
        Assert.Equal([0, 1], config.Vision.DeepstackVisualIndexes);
        using var model = new Qwen3VLForConditionalGeneration(config, torch.META);
        var count = model.parameters().Sum(p => p.numel());
        Assert.InRange(count, 500_000, 3_000_000);
        Assert.True(VisionModelFolder.IsVisionFolder(TinyFixture.VisionModelDir));
        Assert.False(VisionModelFolder.IsVisionFolder(TinyFixture.ModelDir));
    }

    [Theory]
    [InlineData("qwen3_vl_moe", null, "mixture of experts")]
    [InlineData("qwen3_vl", "[4, 2, 2]", "mrope_section [4, 2, 2] must have three entries summing to head_dim/2 = 16")]
    public void Unsupported_configs_name_the_key(string modelType, string? section, string expected)
    {
        var folder = Path.Combine(dir, "bad");
        Directory.CreateDirectory(folder);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyFixture.VisionModelDir, "config.json")))!.AsObject();
        json["model_type"] = modelType;
        if (section != null) json["text_config"]!["rope_scaling"]!["mrope_section"] = JsonNode.Parse(section);
        File.WriteAllText(Path.Combine(folder, "config.json"), json.ToJsonString());
        var e = Assert.Throws<TrainerUserException>(() => VisionModelFolder.LoadConfig(folder));
        Assert.Contains(expected, e.Message);
    }
}
