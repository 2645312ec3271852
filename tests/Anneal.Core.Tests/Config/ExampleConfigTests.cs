// Every config in examples/configs loads, its hyperparameters parse, and its settings pass the
// model checks the server and CLI run before training (JobChecks), so an example never fails as
// written. That the tiny-model examples' datasets fit their sequence_length is checked with the
// real tokenizer in Anneal.Training.Tests (ExampleConfigTrainingTests).
using Anneal.Core.Config;
using Anneal.Core.Models;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Config;

public class ExampleConfigTests
{
    public static TheoryData<string> Configs()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(RepoPaths.Of("examples", "configs"), "*.toml").Order()) data.Add(Path.GetFileName(f));
        return data;
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void The_example_config_validates_and_fits_its_model(string name)
    {
        var (config, errors) = TrainingConfigLoader.Load(RepoPaths.Of("examples", "configs", name));
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        var (settings, hpErrors) = HyperparameterParser.Parse(config!.Hyperparameters);
        Assert.True(hpErrors.Count == 0, string.Join("\n", hpErrors));
        var model = ModelRegistry.Find(config.Model);
        Assert.NotNull(model);
        var problems = JobChecks.CheckAgainstModel(model, settings);
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void There_are_example_configs() => Assert.True(Configs().Count >= 2);
}
