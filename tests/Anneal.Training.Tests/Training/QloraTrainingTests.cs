// QLoRA end to end in the trainer: the tiny model trains with an NF4 base and its loss falls like
// LoRA's on the same data; the output is the same PEFT adapter as LoRA's, it loads back onto a
// freshly quantised base, and the merged folder gives the adapted model's logits; a resumed QLoRA
// run continues the same loss curve.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class QloraTrainingTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-qlora-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static TrainingSettings Settings(string mode) => new()
    {
        Mode = mode, TotalSteps = 8, PerDeviceBatch = 4, LearningRate = 5e-3, Seed = 5,
        Lora = new LoraSettings(R: 8, Alpha: 16, TargetModules: ["q_proj", "v_proj", "down_proj"]),
    };

    [Fact]
    public void Qlora_loss_falls_like_lora_and_the_adapter_merges_back()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exitL, eventsL, errL) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "lora"), data, Settings(TrainingModes.Lora)));
        Assert.True(exitL == 0, errL);
        var qdir = Path.Combine(dir, "qlora");
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(qdir, data, Settings(TrainingModes.Qlora), mergeLora: true));
        Assert.True(exit == 0, err + string.Join("\n", events.Select(e => e.Message)));
        var lora = TinyFixture.Losses(eventsL);
        var qlora = TinyFixture.Losses(events);
        output.WriteLine($"lora  {string.Join(" ", lora.Select(l => l.ToString("F4")))}\nqlora {string.Join(" ", qlora.Select(l => l.ToString("F4")))}");
        // The NF4 base is the bf16 one up to ~9 % weight noise: the curves start together and fall alike.
        Assert.Equal(lora[0], qlora[0], 0.05);
        Assert.True(qlora[^1] < qlora[0] - 0.5 * (lora[0] - lora[^1]), "QLoRA's loss fell less than half as far as LoRA's");
        Assert.Equal(lora[^1], qlora[^1], 0.1 * (lora[0] - lora[^1]) + 0.05);

        // Output: the PEFT adapter, as LoRA writes it.
        var completed = Assert.Single(events, e => e.Type == EventTypes.Completed);
        var final = completed.Data!["final_path"]!.GetValue<string>();
        var merged = completed.Data!["merged_path"]!.GetValue<string>();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(final, Lora.AdapterConfigFile)))!;
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal(8, config["r"]!.GetValue<int>());
        var adapter = SafetensorsFile.Open(Path.Combine(final, Lora.AdapterWeightsFile));
        Assert.Equal(4 * 3 * 2, adapter.Entries.Count);
        Assert.Contains("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight", adapter.Entries.Keys);

        // Load back: a fresh QLoRA model (base quantised again from the checkpoint: the same bytes)
        // with the adapter gives the logits of the merged full-precision folder.
        var settings = new LoraSettings(R: 8, Alpha: 16, TargetModules: ["q_proj", "v_proj", "down_proj"]);
        using var adapted = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32, settings, nf4Base: true);
        Lora.LoadAdapter(adapted, final);
        using var plain = ModelFolder.Load(merged, torch.CPU, torch.ScalarType.Float32);
        Assert.DoesNotContain(plain.named_parameters(), p => p.name.Contains("lora"));
        using var baseModel = ModelFolder.Load(TinyFixture.ModelDir, torch.CPU, torch.ScalarType.Float32);
        adapted.eval(); plain.eval(); baseModel.eval();
        using var _ = torch.no_grad();
        using var ids = torch.tensor(new long[] { 1, 5, 9, 40, 77, 3, 200, 11 }).view(1, -1);
        using var pos = torch.arange(8, dtype: torch.ScalarType.Int64).view(1, -1);
        using var a = adapted.call(ids, pos, null);
        using var b = plain.call(ids, pos, null);
        using var c = baseModel.call(ids, pos, null);
        var diff = TestTensors.MaxDiff(a, b);
        output.WriteLine($"merged vs adapted max diff {diff:E2}; adapted vs original base {TestTensors.MaxDiff(a, c):E2}");
        Assert.True(diff < 1e-4, $"merged logits differ by {diff}");
        Assert.True(TestTensors.MaxDiff(a, c) > 1e-3, "the adapter changed nothing");
        // The merged folder holds every decoder projection, dequantised (not only the targeted ones).
        var weights = SafetensorsSet.OpenFolder(merged);
        Assert.Contains("model.layers.0.self_attn.k_proj.weight", weights.Names);
        Assert.Equal(baseModel.named_parameters().Select(p => p.name).Order(), weights.Names.Order());
    }

    [Fact]
    public void Resumed_qlora_run_continues_the_same_loss_curve()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = Settings(TrainingModes.Qlora) with { TotalSteps = 4, PerDeviceBatch = 2, SaveSteps = 2, Lora = new LoraSettings(R: 4, Alpha: 8, Dropout: 0.1) };
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "straight"), data, settings));
        Assert.True(exit == 0, err);
        var full = TinyFixture.Losses(events);
        var checkpoint = Path.Combine(dir, "straight", "out", "checkpoints", "step-2");
        Assert.True(File.Exists(Path.Combine(checkpoint, Lora.AdapterWeightsFile)));
        var (exit2, events2, err2) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "resumed"), data, settings, resumeFrom: checkpoint));
        Assert.True(exit2 == 0, err2);
        var resumed = TinyFixture.Losses(events2);
        output.WriteLine($"{string.Join(" ", full)}\n{string.Join(" ", resumed)}");
        Assert.Equal(2, resumed.Count);
        for (var i = 0; i < 2; i++) Assert.Equal(full[2 + i], resumed[i], 1e-6);
    }
}
