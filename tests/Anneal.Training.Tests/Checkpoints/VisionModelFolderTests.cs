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
        Assert.InRange(count, 1_000_000, 1_100_000);                      // about 0.87M text + 0.18M vision
        Assert.True(VisionModelFolder.IsVisionFolder(TinyFixture.VisionModelDir));
        Assert.False(VisionModelFolder.IsVisionFolder(TinyFixture.ModelDir));
    }

    [Fact]
    public void A_config_with_mrope_section_inside_rope_parameters_loads_as_the_same_model()
    {
        // transformers v5 writes RoPE as text_config.rope_parameters (rope_theta and mrope_section
        // inside it) and leaves tie_word_embeddings and dtype at the top; 4.57 as rope_scaling plus rope_theta.
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(TinyFixture.VisionModelDir, "config.json")))!.AsObject();
        string Folder(string name, Action<JsonObject> edit)
        {
            var folder = Path.Combine(dir, name);
            Directory.CreateDirectory(folder);
            foreach (var f in Directory.GetFiles(TinyFixture.VisionModelDir)) File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
            var json = original.DeepClone().AsObject();
            edit(json);
            File.WriteAllText(Path.Combine(folder, "config.json"), json.ToJsonString());
            return folder;
        }
        var v457 = Folder("v4.57", json =>
        {
            var text = json["text_config"]!.AsObject();
            text["rope_theta"] = 12345.0;
            text["rope_scaling"] = new JsonObject { ["rope_type"] = "default", ["mrope_section"] = new JsonArray(10, 4, 2), ["mrope_interleaved"] = true };
        });
        var v5 = Folder("v5", json =>
        {
            var text = json["text_config"]!.AsObject();
            text.Remove("rope_theta");
            text.Remove("rope_scaling");
            text["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 12345.0, ["mrope_section"] = new JsonArray(10, 4, 2), ["mrope_interleaved"] = true };
            json["tie_word_embeddings"] = text["tie_word_embeddings"]?.DeepClone() ?? false;
            text.Remove("tie_word_embeddings");
        });

        var config = VisionModelFolder.LoadConfig(v5);
        Assert.Equal([10, 4, 2], config.MropeSection);
        Assert.Equal(12345.0, config.Text.RopeTheta);
        var old = VisionModelFolder.LoadConfig(v457);
        Assert.Equal(old.MropeSection, config.MropeSection);
        Assert.Equal(old.Text.RopeTheta, config.Text.RopeTheta);
        Assert.Equal(old.TieWordEmbeddings, config.TieWordEmbeddings);

        // The weights load under either layout and compute the same logits.
        using var a = VisionModelFolder.Load(v457, torch.CPU, torch.ScalarType.Float32);
        using var b = VisionModelFolder.Load(v5, torch.CPU, torch.ScalarType.Float32);
        var ids = torch.tensor(new long[] { 1, 5, 9, 3, 7, 2 }).view(1, 6);
        var positions = torch.arange(6, dtype: torch.int64).view(1, 1, 6).expand(3, 1, 6).contiguous();
        using (torch.no_grad())
            Assert.True(TestTensors.Same(a.call(new VisionLanguageInputs(ids, positions, null, null)), b.call(new VisionLanguageInputs(ids, positions, null, null))));
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
