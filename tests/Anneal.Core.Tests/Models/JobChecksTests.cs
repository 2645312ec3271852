// JobChecks.CheckAgainstModel: what the server (job creation) and the CLI (before upload) reject
// before any trainer starts.
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Models;

public class JobChecksTests
{
    static readonly ModelInfo Tiny = ModelRegistry.Find(ModelRegistry.TinyModelId)!;
    static readonly ModelInfo Small = ModelRegistry.Find("Qwen/Qwen3-0.6B")!;

    [Fact]
    public void Settings_that_fit_the_model_pass()
    {
        Assert.Empty(JobChecks.CheckAgainstModel(Tiny, new TrainingSettings { Mode = TrainingModes.Lora, SequenceLength = 2048 }));
        Assert.Empty(JobChecks.CheckAgainstModel(Small, new TrainingSettings { SequenceLength = 40960 }));
        Assert.Empty(JobChecks.CheckAgainstModel(Small, new TrainingSettings()));
    }

    [Fact]
    public void Sequence_length_above_the_context_length_names_both_numbers_and_both_keys()
    {
        var e = Assert.Single(JobChecks.CheckAgainstModel(Tiny, new TrainingSettings { SequenceLength = 100000 }));
        Assert.Equal(("hyperparameters.sequence_length", "hyperparameters.sequence_length", ErrorCodes.UserConfigError), (e.Field, e.TomlKey, e.Code));
        Assert.Equal("sequence_length 100000 exceeds the context length 2048 of anneal/tiny-qwen3; use at most 2048", e.Message);
    }

    [Fact]
    public void Qlora_is_offered_on_every_trainable_dense_model()
    {
        foreach (var model in ModelRegistry.All.Where(m => m.Trainable))
            Assert.Empty(JobChecks.CheckAgainstModel(model, new TrainingSettings { Mode = TrainingModes.Qlora }));
        var e = Assert.Single(JobChecks.CheckAgainstModel(Small, new TrainingSettings { Mode = "dpo" }));
        Assert.Equal(("hyperparameters.training_mode", "training.mode", ErrorCodes.UserConfigError), (e.Field, e.TomlKey, e.Code));
        Assert.Equal("\"dpo\" is not available for Qwen/Qwen3-0.6B; allowed: full_finetune, lora, qlora", e.Message);
    }

    [Fact]
    public void An_untrainable_model_is_reported_once_with_its_note()
    {
        var moe = ModelRegistry.Find("Qwen/Qwen3-30B-A3B")!;
        var e = Assert.Single(JobChecks.CheckAgainstModel(moe, new TrainingSettings { Mode = TrainingModes.Qlora, SequenceLength = 999999 }));
        Assert.Equal(("model", "job.model", ErrorCodes.UnknownModel), (e.Field, e.TomlKey, e.Code));
        Assert.Contains(moe.TrainableNote!, e.Message);
    }

    [Fact]
    public void Several_problems_are_all_reported()
    {
        var errors = JobChecks.CheckAgainstModel(Tiny, new TrainingSettings { Mode = "dpo", SequenceLength = 4096 });
        Assert.Equal(["hyperparameters.training_mode", "hyperparameters.sequence_length"], errors.Select(e => e.Field));
    }
}
