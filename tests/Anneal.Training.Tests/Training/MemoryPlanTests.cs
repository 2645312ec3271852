// The trainer asks the memory model before loading weights: a job that cannot fit the device fails
// at once with out_of_memory and what would fit; one that fits runs with the chosen settings.
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class MemoryPlanTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-mem-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static readonly TrainingSettings Quick = new() { TotalSteps = 2, PerDeviceBatch = 2, LearningRate = 1e-3 };

    [Fact]
    public void A_job_larger_than_the_device_fails_before_loading_weights_and_says_what_would_fit()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick), new TrainerOptions { DeviceMemoryBytes = 64L << 20 });
        Assert.Equal(TrainerProcess.ExitFailed, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Equal(ErrorCodes.OutOfMemory, failed.Data!["error"]!["code"]!.GetValue<string>());
        Assert.Contains("does not fit in 0.1 GiB free on cpu", failed.Message);
        Assert.Contains("would fit: ", failed.Message);
        Assert.False(Assert.Single(events, e => e.Type == EventTypes.MemoryPlanned).Data!["fits"]!.GetValue<bool>());
        Assert.DoesNotContain(events, e => e.Type == EventTypes.Progress);
    }

    [Fact]
    public void A_job_that_fits_reports_the_estimate_and_the_chosen_settings()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick with { GradientAccumulationSteps = 2 }),
            new TrainerOptions { DeviceMemoryBytes = 8L << 30 });
        Assert.Equal(0, exit);
        var estimate = Assert.Single(events, e => e.Type == EventTypes.MemoryPlanned);
        Assert.Contains("with 8.0 GiB free: activation checkpointing off, optimizer state exact", estimate.Message);
        Assert.True(estimate.Data!["fits"]!.GetValue<bool>());
        var parts = new[] { "weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "loss_bytes", "workspace_bytes" }
            .Sum(k => estimate.Data![k]!.GetValue<long>());
        Assert.Equal(estimate.Data!["estimated_peak_bytes"]!.GetValue<long>(), parts);
        Assert.Equal(2, TinyFixture.Losses(events).Count);
    }

    [Fact]
    public void An_unknown_optimizer_precision_is_a_config_error()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick with { OptimizerPrecision = "tiny" }));
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        Assert.Contains("optimizer_precision \"tiny\" is not known", Assert.Single(events, e => e.Type == EventTypes.Failed).Message);
    }
}
