// The repository's example configs for the tiny model work as written: every example of their
// datasets (training and validation) fits their sequence_length with the tiny model's tokenizer,
// and the LoRA example trains to the end with validation and no dropped or truncated example.
using Anneal.Core.Config;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Tests.Tokenization;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class ExampleConfigTrainingTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-example-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static string ConfigsDir => Path.Combine(NodeReference.RepoRoot, "examples", "configs");

    public static TheoryData<string> TinyConfigs()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(ConfigsDir, "*.toml").Order())
            if (TrainingConfigLoader.Load(f).Config is { Model: ModelRegistry.TinyModelId }) data.Add(Path.GetFileName(f));
        return data;
    }

    static (TrainingConfig Config, TrainingSettings Settings, string Data, string? Validation) Load(string name)
    {
        var (config, errors) = TrainingConfigLoader.Load(Path.Combine(ConfigsDir, name));
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        var settings = config!.Settings.Training;
        var data = config.ResolveDataPath(config.DataPath!, out var tried) ?? throw new FileNotFoundException(string.Join(", ", tried));
        var validation = config.ValidationPath is { } v ? config.ResolveDataPath(v, out tried) ?? throw new FileNotFoundException(string.Join(", ", tried)) : null;
        return (config, settings, data, validation);
    }

    [Fact]
    public void There_is_a_tiny_model_example() => Assert.NotEmpty(TinyConfigs());

    [Theory]
    [MemberData(nameof(TinyConfigs))]
    public void Every_example_fits_the_configs_sequence_length_with_the_tiny_tokenizer(string name)
    {
        var (_, settings, data, validation) = Load(name);
        var sequenceLength = settings.SequenceLength ?? 2048;
        var tokenizer = Trainer.LoadTokenizer(TinyFixture.ModelDir);
        foreach (var file in new[] { data, validation }.OfType<string>())
            foreach (var (line, record) in DatasetRecords.Read(file))
            {
                var encoded = Qwen3ChatTemplate.Encode(tokenizer, record);
                Assert.True(encoded.InputIds.Length <= sequenceLength,
                    $"{name}: {Path.GetFileName(file)} line {line} has {encoded.InputIds.Length} tokens, more than sequence_length {sequenceLength}");
                Assert.Contains(true, encoded.Trained);
            }
    }

    [Fact]
    public void The_lora_example_trains_as_written()
    {
        var (config, settings, data, validation) = Load("lora.toml");
        var spec = new TrainerJobSpec("job_example", config.Model, TinyFixture.ModelDir, data, validation, Path.Combine(dir, "out"), settings,
            Device: "cpu", MergeLora: false, TrainingFileName: "crafter_sft.jsonl", ValidationFileName: "crafter_sft_val.jsonl");
        var (exit, events, stderr) = TinyFixture.Run(spec);
        Assert.True(exit == TrainerProcess.ExitSucceeded, stderr);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared);
        Assert.Equal("info", prepared.Level);
        Assert.Equal((20, 0, 0), (prepared.Data!["examples"]!.GetValue<int>(), prepared.Data["dropped"]!.GetValue<int>(), prepared.Data["truncated"]!.GetValue<int>()));
        Assert.Equal(settings.TotalSteps, events.Count(e => e.Type == EventTypes.Progress));
        Assert.Contains(events, e => e.Type == EventTypes.ValidationSummary);
        Assert.Equal(EventTypes.Completed, events[^1].Type);
    }
}
