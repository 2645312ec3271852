// Does a device train like the CPU? A few optimizer steps of the built-in tiny model through the
// real trainer on the device (CUDA: bf16), beside the same steps on the CPU in fp32, step for step.
// The losses must agree within bf16 rounding: every op on the device path (custom RMSNorm, rotary
// and SwiGLU nodes, flash attention, chunked loss, the flat optimizer, activation checkpointing)
// takes part. Run by the CUDA smoke test (tests/Anneal.Training.Tests) where CUDA exists and by
// `Anneal.Bench device-check` on the GPU machine (bench/run-gpu.sh), which has no test runner.
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Model;

namespace Anneal.Training.Diagnostics;

/// <summary>One configuration's losses on the device and on the CPU reference.</summary>
public sealed record DeviceCheckRow(string Name, IReadOnlyList<double> Reference, IReadOnlyList<double> Losses)
{
    /// <summary>Largest |device − reference| / |reference| over the steps.</summary>
    public double WorstRelativeDifference =>
        Reference.Count != Losses.Count ? double.PositiveInfinity
        : Reference.Zip(Losses).Max(p => double.IsFinite(p.Second) ? Math.Abs(p.Second - p.First) / Math.Abs(p.First) : double.PositiveInfinity);
}

public sealed record DeviceCheckResult(string Device, string Dtype, IReadOnlyList<DeviceCheckRow> Rows, double Tolerance)
{
    public bool Passed => Rows.All(r => r.WorstRelativeDifference <= Tolerance);

    public string Report()
    {
        var sb = new StringBuilder($"| configuration | step | cpu fp32 | {Device} {Dtype} | relative difference |\n|---|---|---|---|---|\n");
        foreach (var row in Rows)
            for (var i = 0; i < row.Reference.Count; i++)
            {
                var device = i < row.Losses.Count ? row.Losses[i] : double.NaN;
                sb.Append($"| {row.Name} | {i + 1} | {row.Reference[i]:F5} | {device:F5} | {Math.Abs(device - row.Reference[i]) / Math.Abs(row.Reference[i]):E2} |\n");
            }
        sb.Append($"{(Passed ? "PASSED" : "FAILED")}: worst relative difference {Rows.Max(r => r.WorstRelativeDifference):E2}, tolerance {Tolerance:E2}\n");
        return sb.ToString();
    }
}

public static class DeviceCheck
{
    /// <summary>
    /// Largest relative loss difference accepted between bf16 on the device and fp32 on the CPU.
    /// bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2 % per op); over the tiny model's
    /// layers and four steps the CPU's own bf16 path stays within 0.52 % of fp32 (measured,
    /// CudaSmokeTests): 2 % leaves room for other kernels and summation orders on the GPU.
    /// </summary>
    public const double Bf16Tolerance = 0.02;

    static readonly (string Question, string Answer)[] Facts =
    [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("What colour is the sky?", "The sky is blue."),
        ("How many legs does a cat have?", "A cat has four legs."),
        ("What do bees make?", "Bees make honey."),
        ("What is two plus two?", "Two plus two is four."),
        ("Which animal barks?", "A dog barks."),
        ("What melts ice?", "Heat melts ice."),
        ("Where do fish live?", "Fish live in water."),
    ];

    /// <summary>
    /// Trains the tiny model for <paramref name="steps"/> steps on <paramref name="device"/> ("cuda",
    /// or "cpu" with <paramref name="cpuBf16"/> to check the bf16 path without a GPU) and on the CPU in
    /// fp32, in <paramref name="workDir"/>: a full fine-tune, and LoRA with activation checkpointing.
    /// </summary>
    public static DeviceCheckResult Run(string device, string workDir, int steps = 4, bool cpuBf16 = false)
    {
        Directory.CreateDirectory(workDir);
        var modelDir = Path.Combine(workDir, "tiny-qwen3");
        TinyModel.EnsureCreated(modelDir);
        var data = Path.Combine(workDir, "train.jsonl");
        File.WriteAllLines(data, Facts.Select(f => new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = f.Question },
                new JsonObject { ["role"] = "assistant", ["content"] = f.Answer }),
        }.ToJsonString()));

        var configurations = new (string Name, TrainingSettings Settings)[]
        {
            ("full", new TrainingSettings { TotalSteps = steps, PerDeviceBatch = 4, GradientAccumulationSteps = 2, LearningRate = 1e-3, Seed = 7, SequenceLength = 64 }),
            ("lora, checkpointing", new TrainingSettings
            {
                Mode = TrainingModes.Lora, TotalSteps = steps, PerDeviceBatch = 4, LearningRate = 5e-3, Seed = 7, SequenceLength = 64,
                ActivationCheckpointing = "on", Lora = new LoraSettings(R: 4, Alpha: 8),
            }),
        };
        var rows = new List<DeviceCheckRow>();
        foreach (var (name, settings) in configurations)
        {
            var slug = name.Replace(", ", "-");
            var reference = Train(modelDir, data, Path.Combine(workDir, slug + "-cpu"), settings, "cpu", new TrainerOptions());
            var losses = Train(modelDir, data, Path.Combine(workDir, slug + "-" + device), settings, device, new TrainerOptions { CpuBf16 = cpuBf16 });
            rows.Add(new DeviceCheckRow(name, reference, losses));
        }
        return new DeviceCheckResult(device, device == "cuda" || cpuBf16 ? "bf16" : "fp32", rows, Bf16Tolerance);
    }

    static IReadOnlyList<double> Train(string modelDir, string data, string outputDir, TrainingSettings settings, string device, TrainerOptions options)
    {
        var spec = new TrainerJobSpec("job_device_check", ModelRegistry.TinyModelId, modelDir, data, null, outputDir, settings, null, device, false);
        var events = new TrainerEvents(TextWriter.Null, TextWriter.Null);
        return Trainer.Run(spec, events, CancellationToken.None, options).Losses;
    }
}
