// Supervised fine-tuning of a Qwen3-VL model: the vision recipe beside Trainer's text recipe, with
// the same rules (loss = Σ token losses / trained tokens of the whole optimizer step, linear/cosine
// schedule with warmup, AdamW on flat buffers, progress events of the same shape). What differs:
//   - one example per micro-batch (VisionMode), images decoded and patchified per step;
//   - the vision tower is frozen and runs under no_grad, so none of its activations are kept; the
//     language model is trained in full, or through LoRA adapters on its projections;
//   - the result is a Hugging Face Qwen3-VL folder (LoRA merged in), plus the PEFT adapter for LoRA.
// Hugging Face's Qwen3-VL averages micro-batch means under gradient accumulation
// (accepts_loss_kwargs = False); we normalise by the step's trained tokens as for text, so a long
// answer weighs as much per token as a short one whatever the accumulation.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Core.Vision;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Kernels;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using Anneal.Training.Tokenization;
using Anneal.Training.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training;

public static class VisionTrainer
{
    /// <summary>Trains a Qwen3-VL model as the spec says; throws TrainerUserException for problems the user can fix.</summary>
    public static TrainResult Run(TrainerJobSpec spec, TrainerEvents events, CancellationToken ct, TrainerOptions? options = null)
    {
        options ??= new TrainerOptions();
        var (s, adjustments) = VisionMode.Adjust(spec.Settings, spec.Model);
        Trainer.CheckSettings(s);
        foreach (var note in adjustments)
            events.Emit(EventTypes.Log, note, new JsonObject { ["vision_mode"] = true, ["per_device_batch"] = s.PerDeviceBatch, ["gradient_accumulation_steps"] = s.GradientAccumulationSteps });

        // 1. Model folder, device, dtype (bf16 on CUDA).
        if (string.Equals(spec.Model, ModelRegistry.TinyVisionModelId, StringComparison.OrdinalIgnoreCase))
            TinyVisionModel.EnsureCreated(spec.ModelPath);
        var config = VisionModelFolder.LoadConfig(spec.ModelPath);
        var device = Trainer.PickDevice(spec.Device);
        var dtype = device.type == DeviceType.CUDA || options.CpuBf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        events.Emit(EventTypes.ModelLoading, $"Loading {spec.Model} on {device.type.ToString().ToLowerInvariant()} ({dtype}), vision mode",
            new JsonObject { ["model"] = spec.Model, ["model_path"] = spec.ModelPath, ["device"] = device.ToString(), ["dtype"] = dtype.ToString(), ["vision"] = true });
        var contextLength = config.Text.MaxPositionEmbeddings;
        var sequenceLength = s.SequenceLength ?? Math.Min(contextLength, options.DefaultSequenceLength);
        if (sequenceLength > contextLength)
            throw TrainerUserException.Config($"sequence_length {sequenceLength} exceeds the model's max_position_embeddings {contextLength} ({spec.Model}, config.json); use at most {contextLength}");

        // 2. Tokenizer, image processor, data.
        var tokenizer = Trainer.LoadTokenizer(spec.ModelPath);
        var processor = ImageProcessorConfig.Load(spec.ModelPath);
        var thinkBlocks = spec.Model.Contains("Thinking", StringComparison.OrdinalIgnoreCase);
        // Images per message: the registry's value for the model (fine-tuned and unknown ids: 1, the Qwen3-VL default).
        var maxImages = Math.Max(1, ModelRegistry.Find(spec.Model)?.MaxImagesPerMessage ?? 1);
        var (train, stats) = LoadData(spec.TrainingFile, "training file " + (spec.TrainingFileName ?? spec.TrainingFile), tokenizer, config, processor, sequenceLength, thinkBlocks, maxImages, events);
        List<VisionSftExample>? validation = null;
        DataStats? valStats = null;
        if (spec.ValidationFile != null && s.Validation.EvaluationStrategy != "no")
            (validation, valStats) = LoadData(spec.ValidationFile, "validation file " + (spec.ValidationFileName ?? spec.ValidationFile), tokenizer, config, processor, sequenceLength, thinkBlocks, maxImages, events);
        var (prepared, lossy) = Trainer.DataSummary(stats, valStats, sequenceLength);
        var images = train.Sum(e => e.Images.Count);
        events.Emit(EventTypes.DataPrepared, prepared + $"; {images} images", new JsonObject
        {
            ["examples"] = stats.Examples, ["total_examples"] = stats.TotalExamples, ["tokens"] = stats.Tokens,
            ["trained_tokens"] = stats.TrainedTokens, ["truncated"] = stats.Truncated, ["dropped"] = stats.DroppedNoTrainedTokens,
            ["longest_example_tokens"] = stats.LongestTokens, ["sequence_length"] = sequenceLength, ["validation_examples"] = validation?.Count,
            ["images"] = images, ["min_pixels"] = processor.MinPixels, ["max_pixels"] = processor.MaxPixels,
            ["image_tokens"] = train.Sum(e => e.Images.Sum(i => (long)i.Grid.Tokens(processor.MergeSize))),
            ["example"] = new JsonObject { ["text"] = tokenizer.Decode(train[0].Ids) },
        }, lossy ? "warning" : "info");

        // 3. Model with the tower frozen (LoRA layers in the language model when asked), optimizer.
        var lora = s.Mode == TrainingModes.Lora ? s.Lora : null;
        torch.manual_seed(s.Seed);
        using var model = VisionModelFolder.Load(spec.ModelPath, device, dtype, lora);
        foreach (var (name, p) in model.named_parameters())
            if (name.StartsWith(Qwen3VLForConditionalGeneration.VisualPrefix, StringComparison.Ordinal)) p.requires_grad = false;
        var trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        events.Log($"model loaded: {model.parameters().Sum(p => p.numel()):N0} parameters, {trainable:N0} trainable (vision tower frozen; {(lora is null ? "language model in full" : "LoRA on the language model")})");
        using var optimizer = new FlatAdamW(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)),
            weightDecay: s.WeightDecay, decay: (name, p) => p.dim() >= 2 && !name.EndsWith(".bias") && !name.EndsWith("norm.weight"));

        try { return Train(spec, s, model, optimizer, config, processor, train, validation, device, events, ct); }
        catch (Exception e) when (Trainer.IsOutOfMemory(e))
        {
            throw new TrainerUserException(ErrorCodes.OutOfMemory,
                $"out of memory on {device.type.ToString().ToLowerInvariant()} with one example of up to {train.Max(x => x.Length)} tokens (sequence_length {sequenceLength}, max_pixels {processor.MaxPixels}): " +
                $"lower sequence_length, lower max_pixels, or use mode \"lora\". ({e.Message.Split('\n')[0].Trim()})");
        }
    }

    static (List<VisionSftExample>, DataStats) LoadData(string path, string name, Qwen3Tokenizer tokenizer, Qwen3VLConfig config,
        ImageProcessorConfig processor, int sequenceLength, bool thinkBlocks, int maxImagesPerMessage, TrainerEvents events)
    {
        if (!File.Exists(path))
            throw TrainerUserException.BadData($"{name} does not exist");
        var report = DatasetValidator.ValidateFile(path, new DatasetValidationOptions(Vision: true, MaxImagesPerMessage: int.MaxValue));
        if (!report.IsValid)
            throw TrainerUserException.BadData(report.NumExamples == 0 && report.TotalErrors == 0
                ? $"{name} holds no examples"
                : $"{name}: {report.TotalErrors} error(s): {string.Join("; ", report.Errors.Take(5).Select(e => e.ToString()))}");
        var (examples, stats) = VisionSftData.Load(path, name, tokenizer, config, processor, sequenceLength, thinkBlocks, StoredImages.Resolver(path),
            maxImagesPerMessage, (line, removed) => events.Emit(EventTypes.Log,
                $"{name}: Line {line}: {removed} image(s) beyond max_images_per_message {maxImagesPerMessage} left out",
                new JsonObject { ["line"] = line, ["images_removed"] = removed, ["max_images_per_message"] = maxImagesPerMessage }, "debug"));
        if (examples.Count == 0 || stats.DroppedNoTrainedTokens * 2 > stats.TotalExamples)
            throw TrainerUserException.BadData(
                $"{name}: {stats.DroppedNoTrainedTokens} of {stats.TotalExamples} examples have no assistant tokens within sequence_length {sequenceLength} " +
                $"(the longest example has {stats.LongestTokens} tokens, images included); raise [hyperparameters].sequence_length or lower max_pixels. " +
                "A job stops when more than half of a file's examples would be dropped.");
        return (examples, stats);
    }

    /// <summary>The training loop: one example per micro-batch, G micro-batches per optimizer step.</summary>
    static TrainResult Train(TrainerJobSpec spec, TrainingSettings s, Qwen3VLForConditionalGeneration model, FlatAdamW optimizer,
        Qwen3VLConfig config, ImageProcessorConfig processor, List<VisionSftExample> train, List<VisionSftExample>? validation,
        Device device, TrainerEvents events, CancellationToken ct)
    {
        int G = s.GradientAccumulationSteps;
        var stepsPerEpoch = Math.Max(1, (int)Math.Ceiling(train.Count / (double)G));
        var totalSteps = s.TotalSteps ?? Math.Max(1, (int)Math.Ceiling(s.NEpochs!.Value * stepsPerEpoch));
        var warmupSteps = (int)Math.Ceiling(s.WarmupRatio * totalSteps);
        Directory.CreateDirectory(spec.OutputDir);

        var losses = new List<double>();
        long trainedTokens = 0;
        var clock = Stopwatch.StartNew();
        int[] order = [];
        for (var step = 1; step <= totalSteps; step++)
        {
            if (ct.IsCancellationRequested) throw new OperationCanceledException(ct);
            var epoch = (step - 1) / stepsPerEpoch;
            var stepInEpoch = (step - 1) % stepsPerEpoch;
            if (stepInEpoch == 0)
            {
                // A pure function of (seed, epoch), as the text recipe's plans.
                order = Enumerable.Range(0, train.Count).ToArray();
                new Random(unchecked(s.Seed * 1_000_003 + epoch * 7_919 + 17)).Shuffle(order);
            }
            var micro = order.Skip(stepInEpoch * G).Take(G).Select(i => train[i]).ToList();
            torch.manual_seed(s.Seed * 1000003L + step);
            var lr = Trainer.LearningRate(s, step, warmupSteps, totalSteps);

            model.train();
            var batches = micro.Select(e => VisionSftData.Collate(e, config, processor, device)).ToList();
            double loss, gradNorm;
            int stepTokens;
            try
            {
                var n = batches.Sum(b => b.TrainedTokens);
                stepTokens = batches.Sum(b => b.Tokens);
                using (var scope = NewDisposeScope())
                {
                    var total = 0.0;
                    foreach (var b in batches)
                    {
                        using var inner = NewDisposeScope();
                        var sum = TokenLossSum(model, b);
                        (sum / n).backward();
                        total += sum.item<float>();
                    }
                    loss = total / n;
                }
                using (var norm = optimizer.Step(lr, s.MaxGradNorm > 0 ? s.MaxGradNorm : double.PositiveInfinity))
                    gradNorm = norm.item<float>();
                optimizer.ZeroGrad();
                trainedTokens += n;
            }
            finally
            {
                foreach (var b in batches) b.Dispose();
            }
            if (!double.IsFinite(loss) || !double.IsFinite(gradNorm))
                throw TrainerUserException.Config($"training diverged at step {step}: loss {loss}, grad_norm {gradNorm} with learning_rate {s.LearningRate} (lr now {lr:G3}); lower learning_rate, raise warmup_ratio, or set max_grad_norm");
            losses.Add(loss);
            var secondsPerStep = clock.Elapsed.TotalSeconds / step;
            events.Emit(EventTypes.Progress, $"step {step}/{totalSteps} loss {loss:F4}", new JsonObject
            {
                ["step"] = step, ["total_steps"] = totalSteps, ["epoch"] = Math.Round((double)step / stepsPerEpoch, 4),
                ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = double.IsFinite(gradNorm) ? gradNorm : null,
                ["tokens_per_second"] = Math.Round(stepTokens / Math.Max(1e-9, secondsPerStep), 1),
                ["eta_seconds"] = Math.Round((totalSteps - step) * secondsPerStep, 1),
                ["trained_tokens"] = trainedTokens,
            });
        }

        if (validation != null)
        {
            var valLoss = Evaluate(model, validation, config, processor, device);
            events.Emit(EventTypes.ValidationSummary, $"step {totalSteps} val.loss {valLoss:F4}", new JsonObject { ["step"] = totalSteps, ["val_loss"] = valLoss });
        }

        var final = Path.Combine(spec.OutputDir, "final");
        if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
        VisionModelFolder.Save(model, final, spec.ModelPath);
        if (model.LoraSettings != null)
            VisionModelFolder.SaveAdapter(model, Path.Combine(final, "adapter"), spec.Model);
        return new TrainResult(spec.OutputDir, final, null, trainedTokens, losses);
    }

    /// <summary>Σ cross-entropy over one example's trained tokens (float32); the tower runs without gradients.</summary>
    public static Tensor TokenLossSum(Qwen3VLForConditionalGeneration model, VisionBatch b)
    {
        using var scope = NewDisposeScope();
        ImageFeatures? features = null;
        if (b.Patches is not null)
            using (no_grad())
                features = model.ImageFeatures(b.Patches, b.Grids);
        var hidden = model.Hidden(new VisionLanguageInputs(b.Ids, b.Positions, null, features));     // (1, T, D)
        var targets = b.Targets.view(-1);
        var rows = targets.ne(SftData.IgnoreIndex).nonzero().view(-1);
        var h = hidden.view(-1, hidden.shape[^1]).index_select(0, rows);
        return ChunkedCrossEntropy.Sum(h, model.OutputWeight, targets.index_select(0, rows)).MoveToOuterDisposeScope();
    }

    /// <summary>Mean token loss over a dataset, without gradients.</summary>
    public static double Evaluate(Qwen3VLForConditionalGeneration model, IReadOnlyList<VisionSftExample> examples, Qwen3VLConfig config, ImageProcessorConfig processor, Device device)
    {
        model.eval();
        using var _ = no_grad();
        double sum = 0;
        long n = 0;
        foreach (var e in examples)
        {
            using var batch = VisionSftData.Collate(e, config, processor, device);
            using var loss = TokenLossSum(model, batch);
            sum += loss.item<float>();
            n += batch.TrainedTokens;
        }
        model.train();
        return n == 0 ? double.NaN : sum / n;
    }
}
