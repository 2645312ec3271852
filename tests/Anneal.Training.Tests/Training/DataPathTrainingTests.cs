// The trainer through the token cache: a second job on the same data and model reads the first
// one's cache file and trains exactly the same steps; sft.data.prepared says which happened and how
// long it took; a checkpoint written before `batching` existed resumes with its own batching.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class DataPathTrainingTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-datapath-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void A_warm_cache_trains_the_same_loss_curve_as_the_cold_run_that_built_it()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 3, system: "Answer briefly.");
        var cache = Path.Combine(dir, "shared-cache");
        var settings = new TrainingSettings
        {
            TotalSteps = 5, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 3e-3, Seed = 2, SequenceLength = 64,
        };
        TrainerJobSpec Spec(string name) => TinyFixture.Spec(Path.Combine(dir, name), data, settings) with { TokenCacheDir = cache };

        var (e1, cold, err1) = TinyFixture.Run(Spec("cold"));
        var (e2, warm, err2) = TinyFixture.Run(Spec("warm"));
        Assert.True(e1 == 0, err1);
        Assert.True(e2 == 0, err2);
        var (p1, p2) = (Prepared(cold), Prepared(warm));
        Assert.False(p1["cache"]!["used"]!.GetValue<bool>());
        Assert.Equal(Environment.ProcessorCount, p1["cache"]!["tokenize_threads"]!.GetValue<int>());
        Assert.True(p2["cache"]!["used"]!.GetValue<bool>());
        Assert.Equal(p1["cache"]!["file"]!.GetValue<string>(), p2["cache"]!["file"]!.GetValue<string>());
        Assert.Single(Directory.GetFiles(cache));
        Assert.Equal(BatchingModes.TokenBudget, p1["batching"]!.GetValue<string>());
        foreach (var key in new[] { "examples", "tokens", "trained_tokens", "truncated", "file_tokens" })
            Assert.Equal(p1[key]!.GetValue<long>(), p2[key]!.GetValue<long>());
        Assert.True(p1["file_tokens"]!.GetValue<long>() >= p1["tokens"]!.GetValue<long>(), "file tokens count every record before truncation");
        Assert.InRange(p2["seconds"]!.GetValue<double>(), 0, 60);
        Assert.Contains("token cache used", warm.Single(e => e.Type == EventTypes.DataPrepared).Message);

        var (a, b) = (TinyFixture.Losses(cold), TinyFixture.Losses(warm));
        output.WriteLine($"cold {string.Join(" ", a)}\nwarm {string.Join(" ", b)}");
        Assert.Equal(5, a.Count);
        Assert.Equal(a, b);   // the same bytes in, the same arithmetic: identical, not just close
    }

    static JsonObject Prepared(List<TrainerEvent> events) => Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;

    [Fact]
    public void A_checkpoint_from_before_the_batching_setting_resumes_with_its_bucketing()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2);
        TrainingSettings Settings(string? batching) => new()
        {
            TotalSteps = 4, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 2e-3, Seed = 4, SaveSteps = 2,
            LrScheduler = "constant", Batching = batching,
        };
        var straight = Path.Combine(dir, "straight");
        var (exit, events, err) = TinyFixture.Run(TinyFixture.Spec(straight, data, Settings(BatchingModes.Bucketed)));
        Assert.True(exit == 0, err);
        var checkpoint = Path.Combine(straight, "out", "checkpoints", "step-2");
        // What an older trainer wrote: packing and token_budget flags, no batching.
        var statePath = Path.Combine(checkpoint, TrainingCheckpoint.StateFile);
        var state = JsonNode.Parse(File.ReadAllText(statePath))!.AsObject();
        Assert.Equal(BatchingModes.Bucketed, state["batching"]!.GetValue<string>());
        state.Remove("batching");
        File.WriteAllText(statePath, state.ToJsonString());

        // A job that names no batching continues with the checkpoint's, at the same data position.
        var (exit2, resumed, err2) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "resumed"), data, Settings(null), resumeFrom: checkpoint));
        Assert.True(exit2 == 0, err2);
        Assert.Equal(BatchingModes.Bucketed, Prepared(resumed)["batching"]!.GetValue<string>());
        var (full, rest) = (TinyFixture.Losses(events), TinyFixture.Losses(resumed));
        Assert.Equal(2, rest.Count);
        for (var i = 0; i < 2; i++) Assert.Equal(full[2 + i], rest[i], 1e-6);

        // A job that names another batching is refused with both named.
        var (exit3, refused, _) = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "other"), data, Settings(BatchingModes.Padded), resumeFrom: checkpoint));
        Assert.Equal(TrainerProcess.ExitUserError, exit3);
        Assert.Contains("batching bucketed", Assert.Single(refused, e => e.Type == EventTypes.Failed).Message);
    }
}
