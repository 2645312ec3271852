// Shared test material: the tiny Qwen3 model (generated once per test run into a temp folder), a
// small chat dataset, and helpers to run the trainer and read its events.
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Model;
using Anneal.Training.Native;

namespace Anneal.Training.Tests;

static class TinyFixture
{
    static readonly Lazy<string> Folder = new(() =>
    {
        NativeLibraries.EnsureTorchLoaded();
        // One libtorch thread: the test machines are small and shared; spinning worker threads
        // are many times slower than one under contention.
        TorchSharp.torch.set_num_threads(1);
        var dir = Path.Combine(Path.GetTempPath(), $"anneal-tiny-{Environment.ProcessId}", "tiny-qwen3");
        TinyModel.EnsureCreated(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true); } catch (IOException) { }
        };
        return dir;
    });

    /// <summary>The tiny model folder (do not modify it).</summary>
    public static string ModelDir => Folder.Value;

    static readonly Lazy<string> VisionFolder = new(() =>
    {
        var dir = Path.Combine(Path.GetDirectoryName(ModelDir)!, "tiny-qwen3-vl");
        TinyVisionModel.EnsureCreated(dir);
        return dir;
    });

    /// <summary>The tiny Qwen3-VL model folder (do not modify it).</summary>
    public static string VisionModelDir => VisionFolder.Value;

    public static readonly (string Question, string Answer)[] Facts =
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

    public static string WriteChatSet(string dir, string name = "train.jsonl", int repeat = 1, string? system = null)
    {
        var path = Path.Combine(dir, name);
        using var w = new StreamWriter(path);
        for (var r = 0; r < repeat; r++)
            foreach (var (q, a) in Facts)
            {
                var messages = new JsonArray();
                if (system != null) messages.Add(new JsonObject { ["role"] = "system", ["content"] = system });
                messages.Add(new JsonObject { ["role"] = "user", ["content"] = q });
                messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = a });
                w.WriteLine(new JsonObject { ["messages"] = messages }.ToJsonString());
            }
        return path;
    }

    public static TrainerJobSpec Spec(string workDir, string trainingFile, TrainingSettings settings, string? validationFile = null,
        string? resumeFrom = null, bool mergeLora = false, string? modelPath = null) =>
        new("job_test", ModelRegistry.TinyModelId, modelPath ?? ModelDir, trainingFile, validationFile,
            Path.Combine(workDir, "out"), settings, resumeFrom, "cpu", mergeLora);

    /// <summary>Runs the trainer process entry point and returns its exit code and parsed events.</summary>
    public static (int Exit, List<TrainerEvent> Events, string Stderr) Run(TrainerJobSpec spec, TrainerOptions? options = null, CancellationToken ct = default)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = TrainerProcess.RunAsync(spec, stdout, stderr, ct, options).GetAwaiter().GetResult();
        var events = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
        return (exit, events, stderr.ToString());
    }

    public static List<double> Losses(IEnumerable<TrainerEvent> events) =>
        events.Where(e => e.Type == EventTypes.Progress).Select(e => e.Data!["loss"]!.GetValue<double>()).ToList();
}
