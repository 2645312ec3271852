// Entry points of the trainer process (`anneal trainer run --spec PATH`), see
// Anneal.Core.Training.TrainerProtocol for the contract with the control plane: TrainerEvent JSON
// lines on stdout, diagnostics on stderr, exit 0 / 1 (failed) / 2 (user error) / 130 (cancelled).
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Native;
using TorchSharp;

namespace Anneal.Training;

public static class TrainerProcess
{
    /// <summary>Exit codes of the trainer process.</summary>
    public const int ExitSucceeded = 0, ExitFailed = 1, ExitUserError = 2, ExitCancelled = 130;

    /// <summary>Reads the spec file, trains, writes TrainerEvent JSON lines to stdout.</summary>
    public static Task<int> RunAsync(string specPath, TextWriter stdout, TextWriter stderr, CancellationToken ct, TrainerOptions? options = null)
    {
        var events = new TrainerEvents(stdout, stderr);
        TrainerJobSpec? spec;
        try
        {
            spec = JsonSerializer.Deserialize<TrainerJobSpec>(File.ReadAllText(specPath), AnnealJson.Options);
            if (spec == null) throw new JsonException("the file holds null");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return Task.FromResult(Fail(events, ErrorCodes.UserConfigError, $"spec {specPath} could not be read: {e.Message}", ExitUserError));
        }
        return RunAsync(spec, stdout, stderr, ct, options);
    }

    /// <summary>Same, for a spec built in memory (`anneal train-local`).</summary>
    public static Task<int> RunAsync(TrainerJobSpec spec, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        RunAsync(spec, stdout, stderr, ct, null);

    /// <summary>Same, with trainer options (packing, CPU bf16) that are not job hyperparameters.</summary>
    public static Task<int> RunAsync(TrainerJobSpec spec, TextWriter stdout, TextWriter stderr, CancellationToken ct, TrainerOptions? options)
    {
        var events = new TrainerEvents(stdout, stderr);
        // Training runs on its own thread: libtorch calls block.
        return Task.Factory.StartNew(() => Run(spec, events, ct, options), CancellationToken.None,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    static int Run(TrainerJobSpec spec, TrainerEvents events, CancellationToken ct, TrainerOptions? options)
    {
        try
        {
            NativeLibraries.EnsureTorchLoaded();
            var result = Trainer.Run(spec, events, ct, options);
            var data = new JsonObject
            {
                ["output_dir"] = result.OutputDir,
                ["final_path"] = result.FinalPath,
                ["trained_tokens"] = result.TrainedTokens,
            };
            if (result.MergedPath != null) data["merged_path"] = result.MergedPath;
            events.Emit(EventTypes.Completed, $"training finished: {result.FinalPath}", data);
            return ExitSucceeded;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested && options?.CheckpointAndStop.IsCancellationRequested == true)
        {
            events.Emit(EventTypes.Cancelled, "training stopped at an optimizer step boundary after saving a checkpoint", level: "warning");
            return ExitCancelled;
        }
        catch (OperationCanceledException)
        {
            events.Emit(EventTypes.Cancelled, "training cancelled at an optimizer step boundary", level: "warning");
            return ExitCancelled;
        }
        catch (TrainerUserException e)
        {
            return Fail(events, e.Code, e.Message, e.Code == ErrorCodes.OutOfMemory ? ExitFailed : ExitUserError);
        }
        catch (Exception e) when (Trainer.IsOutOfMemory(e))
        {
            var s = spec.Settings;
            return Fail(events, ErrorCodes.OutOfMemory,
                $"out of memory with per_device_batch {s.PerDeviceBatch} and sequence_length {s.SequenceLength?.ToString() ?? "default"} ({FirstLine(e.Message)}): " +
                "lower per_device_batch (raise gradient_accumulation_steps to keep the effective batch), lower sequence_length, or use mode \"lora\".",
                ExitFailed);
        }
        catch (Exception e)
        {
            events.Log(e.ToString());
            return Fail(events, ErrorCodes.Internal, $"{e.GetType().Name}: {FirstLine(e.Message)}", ExitFailed);
        }
    }

    static int Fail(TrainerEvents events, string code, string message, int exitCode)
    {
        events.Emit(EventTypes.Failed, message, new JsonObject { ["error"] = new JsonObject { ["code"] = code, ["message"] = message } }, "error");
        return exitCode;
    }

    static string FirstLine(string s) => s.Split('\n', 2)[0].Trim();

    /// <summary>Greedy answer from a model folder (`anneal generate`), for the demo and smoke tests.</summary>
    /// <param name="imagePaths">image files shown to a Qwen3-VL model before the prompt.</param>
    public static Task<int> GenerateAsync(string modelDir, string prompt, int maxNewTokens, TextWriter stdout, TextWriter stderr, CancellationToken ct,
        IReadOnlyList<string>? imagePaths = null) =>
        Task.Factory.StartNew(() =>
        {
            try
            {
                if (!Directory.Exists(modelDir))
                    throw TrainerUserException.Config($"model folder {modelDir} does not exist");
                NativeLibraries.EnsureTorchLoaded();
                var device = Trainer.PickDevice("auto");
                var dtype = device.type == DeviceType.CUDA ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32;
                var tokenizer = Trainer.LoadTokenizer(modelDir);
                if (VisionModelFolder.IsVisionFolder(modelDir))
                {
                    stdout.WriteLine(tokenizer.Decode(GenerateWithImages(modelDir, tokenizer, prompt, imagePaths ?? [], maxNewTokens, device, dtype, ct)));
                    stdout.Flush();
                    return ct.IsCancellationRequested ? ExitCancelled : ExitSucceeded;
                }
                if (imagePaths is { Count: > 0 })
                    throw TrainerUserException.Config($"{modelDir} is a text-only model; images need a Qwen3-VL model folder");
                using var model = LoadForGeneration(modelDir, device, dtype);
                var ids = Generation.Greedy(model, Generation.PromptIds(tokenizer, prompt), maxNewTokens,
                    Generation.StopIds(tokenizer, model.Config, modelDir), ct);
                stdout.WriteLine(tokenizer.Decode(ids));
                stdout.Flush();
                return ct.IsCancellationRequested ? ExitCancelled : ExitSucceeded;
            }
            catch (TrainerUserException e)
            {
                stderr.WriteLine($"error: {e.Message}");
                return ExitUserError;
            }
            catch (Exception e)
            {
                stderr.WriteLine($"error: {e.GetType().Name}: {e.Message}");
                return ExitFailed;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    static List<int> GenerateWithImages(string modelDir, Tokenization.Qwen3Tokenizer tokenizer, string prompt, IReadOnlyList<string> imagePaths,
        int maxNewTokens, torch.Device device, torch.ScalarType dtype, CancellationToken ct)
    {
        var images = new List<Anneal.Core.Vision.RgbImage>();
        foreach (var path in imagePaths)
        {
            if (!File.Exists(path)) throw TrainerUserException.Config($"--image {path}: file not found");
            images.Add(Anneal.Core.Vision.ImageDecoder.TryDecode(File.ReadAllBytes(path), out var problem)
                ?? throw TrainerUserException.Config($"--image {path}: {problem}"));
        }
        using var model = VisionModelFolder.Load(modelDir, device, dtype);
        var processor = Vision.ImageProcessorConfig.Load(modelDir);
        var (ids, processed) = VisionGeneration.Prompt(tokenizer, model.Config, processor, prompt, images);
        return VisionGeneration.Greedy(model, ids, processed, processor.MergeSize, maxNewTokens,
            Generation.StopIds(tokenizer, model.Config.Text, modelDir), ct);
    }

    /// <summary>
    /// A full model folder, or a PEFT adapter folder whose adapter_config.json names a local base
    /// model folder (base_model_name_or_path); other adapters must be merged first (final/merged).
    /// </summary>
    internal static Model.Qwen3ForCausalLM LoadForGeneration(string modelDir, torch.Device device, torch.ScalarType dtype)
    {
        var adapterConfig = Path.Combine(modelDir, Model.Lora.AdapterConfigFile);
        if (File.Exists(Path.Combine(modelDir, ModelFolder.ConfigFile)) || !File.Exists(adapterConfig))
            return ModelFolder.Load(modelDir, device, dtype);
        var config = JsonNode.Parse(File.ReadAllText(adapterConfig))!;
        var baseModel = config["base_model_name_or_path"]?.GetValue<string>() ?? "";
        if (!Directory.Exists(baseModel))
            throw TrainerUserException.Config($"{modelDir} is a LoRA adapter for {baseModel}, which is not a local model folder: generate from the merged model (final/merged) instead");
        var targets = config["target_modules"]?.AsArray().Select(x => x!.GetValue<string>()).ToList();
        var lora = new LoraSettings(config["r"]!.GetValue<int>(), config["lora_alpha"]!.GetValue<double>(), 0.0, targets);
        var model = ModelFolder.Load(baseModel, device, dtype, lora);
        Model.Lora.LoadAdapter(model, modelDir);
        return model;
    }
}
