// End-to-end training of the tiny Qwen3 on CPU through TrainerProcess: the loss falls, the model
// answers a memorised question by greedy decoding, and the output folders are complete.
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class TrainerTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-train-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public async Task Full_finetune_memorises_the_answers()
    {
        var data = TinyFixture.WriteChatSet(dir);
        var settings = new TrainingSettings
        {
            TotalSteps = 40, PerDeviceBatch = 8, GradientAccumulationSteps = 1, LearningRate = 3e-3,
            WarmupRatio = 0.1, LrScheduler = "constant", WeightDecay = 0.0, Seed = 7,
        };
        var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(dir, data, settings));
        output.WriteLine(stderr);
        Assert.True(exit == 0, string.Join("\n", events.Select(e => e.Message)));
        var losses = TinyFixture.Losses(events);
        output.WriteLine(string.Join(" ", losses.Select(l => l.ToString("F3"))));
        Assert.Equal(40, losses.Count);
        Assert.True(losses[^1] < 0.1, $"loss did not fall far enough: {losses[^1]}");
        Assert.True(losses.TakeLast(5).Average() < 0.05 * losses.Take(5).Average(), "loss did not fall");

        var completed = Assert.Single(events, e => e.Type == EventTypes.Completed);
        var final = completed.Data!["final_path"]!.GetValue<string>();
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
            Assert.True(File.Exists(Path.Combine(final, f)), f);

        var stdout = new StringWriter();
        var err = new StringWriter();
        var code = await TrainerProcess.GenerateAsync(final, TinyFixture.Facts[0].Question, 30, stdout, err, default);
        output.WriteLine(stdout.ToString() + err);
        Assert.Equal(0, code);
        // The model learnt Qwen3's empty think block too; the answer follows it.
        var answer = stdout.ToString().Trim();
        Assert.StartsWith("<think>", answer);
        Assert.Equal(TinyFixture.Facts[0].Answer, answer[(answer.IndexOf("</think>") + "</think>".Length)..].Trim());
    }
}
