// Background checkpoint writes: what lands on disk is the state at the moment of the save, bit for
// bit, even though training changes the weights and moments while the file is written; writes
// report on the training thread in order; a failed write fails the job with its reason.
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Checkpoints;

[Collection(TorchRandomCollection.Name)]
public sealed class CheckpointWriterTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-ckptwriter-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static FlatAdamW Optimizer(Qwen3ForCausalLM model) =>
        new(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)));

    /// <summary>One optimizer step on a fixed batch, so weights and moments are not at their initial values.</summary>
    static void TrainStep(Qwen3ForCausalLM model, FlatAdamW optimizer, long seed)
    {
        using var scope = NewDisposeScope();
        var ids = randint(0, model.Config.VocabSize, [2, 6], generator: new Generator((ulong)seed));
        var positions = arange(6, dtype: ScalarType.Int64).expand(2, 6);
        model.call(ids, positions, null).square().mean().backward();
        optimizer.Step(1e-2);
        optimizer.ZeroGrad();
    }

    static Dictionary<string, Tensor> Copy(IEnumerable<(string Name, Tensor Tensor)> tensors) =>
        tensors.ToDictionary(t => t.Name, t => t.Tensor.detach().clone());

    static Dictionary<string, Tensor> OptimizerState(FlatAdamW o) =>
        o.StateDict().Where(kv => kv.Key != "step").ToDictionary(kv => kv.Key, kv => kv.Value.clone());

    [Theory]
    [InlineData(TrainingModes.FullFinetune)]
    [InlineData(TrainingModes.Lora)]
    public void A_background_write_holds_the_state_of_the_save_bit_for_bit(string mode)
    {
        var lora = mode == TrainingModes.Lora ? new LoraSettings(R: 4, Alpha: 8) : null;
        manual_seed(3);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float32, lora);
        using var optimizer = Optimizer(model);
        TrainStep(model, optimizer, 1);
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter));
        var weightsAtSave = Copy(trainable);
        var stateAtSave = OptimizerState(optimizer);

        var folder = Path.Combine(dir, "step-1");
        var reported = new List<int>();
        using var writer = new CheckpointWriter();
        writer.Save(folder, model, optimizer, new TrainerState { Step = 1, Mode = mode }, TinyFixture.ModelDir, "anneal/tiny-qwen3", () => reported.Add(1));
        TrainStep(model, optimizer, 2);   // training goes on while the folder is written
        TrainStep(model, optimizer, 3);
        Assert.True(Copy(trainable).Any(kv => !TestTensors.Same(kv.Value, weightsAtSave[kv.Key])), "training changed the weights");
        writer.Wait();
        Assert.Equal([1], reported);
        Assert.False(Directory.Exists(folder + ".partial"));

        manual_seed(99);   // another LoRA initialisation: loading must overwrite it
        using var reloaded = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float32, lora);
        using var reloadedOptimizer = Optimizer(reloaded);
        TrainingCheckpoint.LoadWeights(reloaded, folder);
        TrainingCheckpoint.LoadOptimizer(folder, reloadedOptimizer);
        foreach (var (name, p) in reloaded.named_parameters().Where(p => p.parameter.requires_grad))
            Assert.True(TestTensors.Same(p, weightsAtSave[name]), $"{name} differs from the saved step");
        foreach (var (key, t) in OptimizerState(reloadedOptimizer))
            Assert.True(TestTensors.Same(t, stateAtSave[key]), $"optimizer {key} differs from the saved step");
        Assert.Equal(1, reloadedOptimizer.StepCount);
        Assert.Equal(1, TrainingCheckpoint.ReadState(folder).Step);
    }

    [Fact]
    public void The_next_save_waits_for_the_previous_and_reports_in_order()
    {
        manual_seed(4);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float32);
        using var optimizer = Optimizer(model);
        var reported = new List<int>();
        using var writer = new CheckpointWriter();
        for (var step = 1; step <= 3; step++)
        {
            TrainStep(model, optimizer, step);
            var s = step;
            writer.Save(Path.Combine(dir, $"step-{step}"), model, optimizer, new TrainerState { Step = step }, TinyFixture.ModelDir, "base", () => reported.Add(s));
            // At most one write in flight: the previous one has been reported by now.
            Assert.Equal(Enumerable.Range(1, step - 1), reported);
            Assert.True(writer.Busy);
        }
        writer.Wait();
        Assert.Equal([1, 2, 3], reported);
        Assert.False(writer.Busy);
        for (var step = 1; step <= 3; step++)
            Assert.Equal(step, TrainingCheckpoint.ReadState(Path.Combine(dir, $"step-{step}")).Step);
    }

    [Fact]
    public void A_failed_write_is_thrown_with_the_step_folder_and_reason()
    {
        manual_seed(5);
        using var model = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float32);
        using var optimizer = Optimizer(model);
        var blocker = Path.Combine(dir, "not-a-folder");
        File.WriteAllText(blocker, "a file where the checkpoints folder should be");
        var reported = false;
        using var writer = new CheckpointWriter();
        writer.Save(Path.Combine(blocker, "step-7"), model, optimizer, new TrainerState { Step = 7 }, TinyFixture.ModelDir, "base", () => reported = true);
        var error = Assert.Throws<IOException>(writer.Wait);
        Assert.Contains("checkpoint step 7 could not be written to", error.Message);
        Assert.Contains("step-7", error.Message);
        Assert.False(reported);
        writer.Wait();   // reported once: nothing in flight any more
    }

    [Fact]
    public void A_job_whose_checkpoint_cannot_be_written_fails_with_the_reason()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var spec = TinyFixture.Spec(dir, data, new TrainingSettings { TotalSteps = 3, SaveSteps = 1, LearningRate = 1e-3 });
        Directory.CreateDirectory(spec.OutputDir);
        File.WriteAllText(Path.Combine(spec.OutputDir, "checkpoints"), "not a folder");
        var (exit, events, _) = TinyFixture.Run(spec);
        Assert.Equal(TrainerProcess.ExitFailed, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Contains("checkpoint step 1 could not be written", failed.Message);
        Assert.DoesNotContain(events, e => e.Type == EventTypes.CheckpointSaved);
    }
}
