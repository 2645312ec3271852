// Supervised fine-tuning of a Qwen3-VL model: the vision recipe beside Trainer's text recipe, with
// the same rules (loss = Σ token losses / trained tokens of the whole optimizer step, linear/cosine
// schedule with warmup, AdamW on flat buffers, progress events of the same shape). What differs:
//   - one example per micro-batch (VisionMode), images decoded and patchified per step;
//   - the vision tower is frozen and runs under no_grad, so none of its activations are kept; the
//     language model is trained in full, or through LoRA adapters on its projections;
//     train_vision = "merger" also trains the patch mergers (the trunk still runs without autograd),
//     "tower" the whole tower (in full, also beside LoRA);
//   - [model] min_pixels / max_pixels / max_images_per_message override the model's own values;
//   - checkpoints (save_steps, and on SIGUSR1 before stopping) and resume as the text recipe
//     (VisionCheckpoint: the same trainer_state.json and optimizer.bin); validation every eval_steps,
//     the best evaluated weights restored when asked; activation checkpointing when "on" (no memory
//     plan yet, so "auto" is off);
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
        // Also for fine-tuned ids (ft:…), which the registry does not list: the folder decided.
        var (s, adjustments) = VisionMode.Adjust(spec.Settings);
        Trainer.CheckSettings(s);
        // NF4 bases are wired into the text decoder path only: refuse rather than train another mode.
        if (s.Mode == TrainingModes.Qlora)
            throw TrainerUserException.Config("training.mode \"qlora\" is not yet supported for Qwen3-VL models; use \"lora\" or \"full_finetune\"");
        if (s.TrainVision is not (VisionTrainingParts.None or VisionTrainingParts.Merger or VisionTrainingParts.Tower))
            throw TrainerUserException.Config($"train_vision \"{s.TrainVision}\" is not known; use \"none\", \"merger\" or \"tower\"");
        if (s.ActivationCheckpointing is not ("auto" or "on" or "off"))
            throw TrainerUserException.Config($"activation_checkpointing \"{s.ActivationCheckpointing}\" is not known; use \"auto\", \"on\" or \"off\"");
        // Recomputing a layer in backward must give the same activations: LoRA dropout excludes it (as for text).
        if (s.ActivationCheckpointing == "on" && s.Mode == TrainingModes.Lora && s.Lora.Dropout > 0)
            throw TrainerUserException.Config($"activation_checkpointing \"on\" cannot be combined with training.lora.dropout {s.Lora.Dropout}: set dropout to 0 or activation_checkpointing to \"off\"");
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
        var processor = WithOverrides(ImageProcessorConfig.Load(spec.ModelPath), s.Vision, spec.ModelPath);
        var thinkBlocks = spec.Model.Contains("Thinking", StringComparison.OrdinalIgnoreCase);
        // Images per message: [model].max_images_per_message, else the registry's value for the model
        // (fine-tuned and unknown ids: 1, the Qwen3-VL default).
        var maxImages = s.Vision.MaxImagesPerMessage ?? Math.Max(1, ModelRegistry.Find(spec.Model)?.MaxImagesPerMessage ?? 1);
        var (train, stats) = LoadData(spec.TrainingFile, "training file " + (spec.TrainingFileName ?? spec.TrainingFile), tokenizer, config, processor, sequenceLength, thinkBlocks, maxImages, spec.LocalImageFiles, events);
        List<VisionSftExample>? validation = null;
        DataStats? valStats = null;
        if (spec.ValidationFile != null && s.Validation.Enabled && s.Validation.EvaluationStrategy != "no")
            (validation, valStats) = LoadData(spec.ValidationFile, "validation file " + (spec.ValidationFileName ?? spec.ValidationFile), tokenizer, config, processor, sequenceLength, thinkBlocks, maxImages, spec.LocalImageFiles, events);
        var (prepared, lossy) = Trainer.DataSummary(stats, valStats, sequenceLength);
        var images = train.Sum(e => e.Images.Count);
        events.Emit(EventTypes.DataPrepared, prepared + $"; {images} images", new JsonObject
        {
            ["examples"] = stats.Examples, ["total_examples"] = stats.TotalExamples, ["tokens"] = stats.Tokens,
            ["trained_tokens"] = stats.TrainedTokens, ["truncated"] = stats.Truncated, ["dropped"] = stats.DroppedNoTrainedTokens,
            ["longest_example_tokens"] = stats.LongestTokens, ["sequence_length"] = sequenceLength, ["validation_examples"] = validation?.Count,
            ["images"] = images, ["min_pixels"] = processor.MinPixels, ["max_pixels"] = processor.MaxPixels, ["max_images_per_message"] = maxImages,
            ["image_tokens"] = train.Sum(e => e.Images.Sum(i => (long)i.Grid.Tokens(processor.MergeSize))),
            ["example"] = new JsonObject { ["text"] = tokenizer.Decode(train[0].Ids) },
        }, lossy ? "warning" : "info");

        // 3. Model with the tower frozen (LoRA layers in the language model when asked), optimizer.
        var lora = s.Mode == TrainingModes.Lora ? s.Lora : null;
        torch.manual_seed(s.Seed);
        using var model = VisionModelFolder.Load(spec.ModelPath, device, dtype, lora);
        var trainedParts = SelectTrainedParts(model, s.TrainVision);
        // "on": each decoder layer recomputed in backward ("auto" is off: vision mode has no memory plan yet).
        var checkpointing = s.ActivationCheckpointing == "on";
        if (checkpointing)
            model.Decoder.LayerRunner = (layer, h, a) => ActivationCheckpoint.Run(
                (x, c) => layer.call(x, new AttentionInputs(c[0], c[1], c.Count > 2 ? c[2] : null, null)),
                h, a.Mask is null ? [a.Cos, a.Sin] : [a.Cos, a.Sin, a.Mask], layer.parameters());
        var trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        var towerTrainable = model.Visual.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        events.Emit(EventTypes.Log, $"model loaded: {model.parameters().Sum(p => p.numel()):N0} parameters, {trainable:N0} trainable ({trainedParts}); activation checkpointing {(checkpointing ? "on" : "off")}", new JsonObject
        {
            ["train_vision"] = s.TrainVision, ["trained"] = trainedParts, ["trainable_parameters"] = trainable, ["vision_trainable_parameters"] = towerTrainable,
            ["activation_checkpointing"] = checkpointing,
        });
        // Exact state (fp32 moments and master weights, bf16 gradients summed in fp32 across the
        // micro-batches) unless optimizer_precision = "lean"; "auto" is exact here (no memory plan in vision mode yet).
        var lean = s.OptimizerPrecision == OptimizerPrecisions.Lean;
        using var optimizer = new FlatAdamW(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)),
            weightDecay: s.WeightDecay, precision: lean ? OptimizerPrecision.Lean : OptimizerPrecision.Exact,
            fp32GradAccumulation: !lean && s.GradientAccumulationSteps > 1, seed: (ulong)s.Seed,
            decay: (name, p) => p.dim() >= 2 && !name.EndsWith(".bias") && !name.EndsWith("norm.weight"));

        try { return Train(spec, s, options, model, optimizer, config, processor, sequenceLength, train, validation, device, events, ct); }
        catch (Exception e) when (Trainer.IsOutOfMemory(e))
        {
            throw new TrainerUserException(ErrorCodes.OutOfMemory,
                $"out of memory on {device.type.ToString().ToLowerInvariant()} with one example of up to {train.Max(x => x.Length)} tokens (sequence_length {sequenceLength}, max_pixels {processor.MaxPixels}): " +
                $"lower sequence_length, lower max_pixels, set activation_checkpointing = \"on\", or use mode \"lora\". ({e.Message.Split('\n')[0].Trim()})");
        }
    }

    /// <summary>[model].min_pixels / max_pixels over the model's preprocessor_config.json; the pair must stay ordered.</summary>
    static ImageProcessorConfig WithOverrides(ImageProcessorConfig processor, VisionSettings v, string modelPath)
    {
        var result = processor with { MinPixels = v.MinPixels ?? processor.MinPixels, MaxPixels = v.MaxPixels ?? processor.MaxPixels };
        if (result.MinPixels > result.MaxPixels)
            throw TrainerUserException.Config(
                $"min_pixels {result.MinPixels} {(v.MinPixels is null ? $"(from {modelPath}/preprocessor_config.json) " : "")}is larger than max_pixels {result.MaxPixels}" +
                $"{(v.MaxPixels is null ? $" (from {modelPath}/preprocessor_config.json)" : "")}; set [model].min_pixels and max_pixels so that min ≤ max");
        return result;
    }

    /// <summary>
    /// Freezes the tower, or the part of it train_vision does not name; the language model keeps what
    /// the mode gave it (every weight, or the LoRA adapters). Returns what is trained, in words.
    /// </summary>
    public static string SelectTrainedParts(Qwen3VLForConditionalGeneration model, string trainVision)
    {
        foreach (var p in model.Visual.parameters()) p.requires_grad = false;
        var language = model.LoraSettings is null ? "language model in full" : "LoRA on the language model";
        switch (trainVision)
        {
            case VisionTrainingParts.Merger:
                foreach (var p in model.Visual.MergerParameters()) p.requires_grad = true;
                model.Visual.TrunkWithoutGradients = true;
                return language + ", vision mergers in full (patch embedding and blocks frozen)";
            case VisionTrainingParts.Tower:
                foreach (var p in model.Visual.parameters()) p.requires_grad = true;
                model.Visual.TrunkWithoutGradients = false;
                return language + ", vision tower in full";
            default:
                return language + ", vision tower frozen";
        }
    }

    static (List<VisionSftExample>, DataStats) LoadData(string path, string name, Qwen3Tokenizer tokenizer, Qwen3VLConfig config,
        ImageProcessorConfig processor, int sequenceLength, bool thinkBlocks, int maxImagesPerMessage, bool localImageFiles, TrainerEvents events)
    {
        if (!File.Exists(path))
            throw TrainerUserException.BadData($"{name} does not exist");
        var report = DatasetValidator.ValidateFile(path, new DatasetValidationOptions(Vision: true, MaxImagesPerMessage: int.MaxValue, LocalImagePaths: true));
        if (!report.IsValid)
            throw TrainerUserException.BadData(report.NumExamples == 0 && report.TotalErrors == 0
                ? $"{name} holds no examples"
                : $"{name}: {report.TotalErrors} error(s): {string.Join("; ", report.Errors.Take(5).Select(e => e.ToString()))}");
        var (examples, stats) = VisionSftData.Load(path, name, tokenizer, config, processor, sequenceLength, thinkBlocks, StoredImages.Resolver(path),
            maxImagesPerMessage, (line, removed) => events.Emit(EventTypes.Log,
                $"{name}: Line {line}: {removed} image(s) beyond max_images_per_message {maxImagesPerMessage} left out",
                new JsonObject { ["line"] = line, ["images_removed"] = removed, ["max_images_per_message"] = maxImagesPerMessage }, "debug"),
            localImageFiles);
        if (examples.Count == 0 || stats.DroppedNoTrainedTokens * 2 > stats.TotalExamples)
            throw TrainerUserException.BadData(
                $"{name}: {stats.DroppedNoTrainedTokens} of {stats.TotalExamples} examples have no assistant tokens within sequence_length {sequenceLength} " +
                $"(the longest example has {stats.LongestTokens} tokens, images included); raise [hyperparameters].sequence_length or lower max_pixels. " +
                "A job stops when more than half of a file's examples would be dropped.");
        return (examples, stats);
    }

    /// <summary>The training loop: one example per micro-batch, G micro-batches per optimizer step.</summary>
    static TrainResult Train(TrainerJobSpec spec, TrainingSettings s, TrainerOptions options, Qwen3VLForConditionalGeneration model, FlatAdamW optimizer,
        Qwen3VLConfig config, ImageProcessorConfig processor, int sequenceLength, List<VisionSftExample> train, List<VisionSftExample>? validation,
        Device device, TrainerEvents events, CancellationToken ct)
    {
        int G = s.GradientAccumulationSteps;
        var stepsPerEpoch = Math.Max(1, (int)Math.Ceiling(train.Count / (double)G));
        var totalSteps = s.TotalSteps ?? Math.Max(1, (int)Math.Ceiling(s.NEpochs!.Value * stepsPerEpoch));
        var warmupSteps = (int)Math.Ceiling(s.WarmupRatio * totalSteps);
        // Validation every epoch or eval_steps (as the text recipe), and always after the last step.
        int? evalEvery = s.Validation.EvaluationStrategy switch
        {
            "epoch" => stepsPerEpoch,
            "steps" when s.Validation.EvalSteps is > 0 => s.Validation.EvalSteps,
            _ => null,
        };
        double? lastVal = null, bestMetric = null;
        int? bestStep = null;
        var bestDir = Path.Combine(spec.OutputDir, "best");
        var checkpoints = Path.Combine(spec.OutputDir, "checkpoints");
        Directory.CreateDirectory(spec.OutputDir);

        var step = 0;
        long trainedTokens = 0;
        double? lastLoss = null;
        if (spec.ResumeFrom is { } resumeFrom)
        {
            var state = TrainingCheckpoint.ReadState(resumeFrom);
            if (state.PerDeviceBatch != 1 || state.GradientAccumulationSteps != G || state.Seed != s.Seed
                || state.SequenceLength != sequenceLength || state.Mode != s.Mode || state.StepsPerEpoch != stepsPerEpoch)
                throw TrainerUserException.Config($"resume_from {resumeFrom}: the checkpoint was trained with gradient_accumulation_steps {state.GradientAccumulationSteps}, seed {state.Seed}, sequence_length {state.SequenceLength}, mode {state.Mode}, {state.StepsPerEpoch} steps per epoch; " +
                    $"this job has {G}, {s.Seed}, {sequenceLength}, {s.Mode}, {stepsPerEpoch}");
            VisionCheckpoint.LoadWeights(model, resumeFrom);
            TrainingCheckpoint.LoadOptimizer(resumeFrom, optimizer);   // restores the fp32 master weights too
            (step, trainedTokens, lastLoss, bestMetric, bestStep) = (state.Step, state.TrainedTokens, state.LastLoss, state.BestMetric, state.BestStep);
            events.Log($"resumed from {resumeFrom} at step {step}");
        }

        // The resume point of this run is never pruned (the server may know no newer checkpoint).
        var savedStep = step;
        void SaveCheckpoint(double? loss)
        {
            var folder = Path.Combine(checkpoints, $"step-{step}");
            VisionCheckpoint.Save(folder, model, optimizer, new TrainerState
            {
                Step = step, TotalSteps = totalSteps, Epoch = step / stepsPerEpoch, StepInEpoch = step % stepsPerEpoch,
                StepsPerEpoch = stepsPerEpoch, Seed = s.Seed, PerDeviceBatch = 1, GradientAccumulationSteps = G,
                SequenceLength = sequenceLength, Mode = s.Mode, TrainedTokens = trainedTokens, LastLoss = loss, BestMetric = bestMetric, BestStep = bestStep,
            }, spec.ModelPath, spec.AdapterBaseName, s.TrainVision);
            var metrics = new JsonObject { [MetricNames.TrainLoss] = loss };
            if (lastVal is { } v) metrics[MetricNames.ValLoss] = v;
            events.Emit(EventTypes.CheckpointSaved, $"checkpoint step {step}", EventData.ToJson(new CheckpointSavedData(step, folder, metrics)));
            TrainingCheckpoint.PruneOptimizerStates(checkpoints, options.KeepOptimizerStates, protect: spec.ResumeFrom);
            savedStep = step;
        }

        var losses = new List<double>();
        var clock = Stopwatch.StartNew();
        var stepsTimed = 0;
        int[] order = [];
        var orderEpoch = -1;
        while (step < totalSteps)
        {
            // Cancellation is honoured between optimizer steps only.
            if (ct.IsCancellationRequested) throw new OperationCanceledException(ct);
            if (options.CheckpointAndStop.IsCancellationRequested)
            {
                if (step > savedStep) SaveCheckpoint(lastLoss);
                throw new OperationCanceledException(options.CheckpointAndStop);
            }
            var epoch = step / stepsPerEpoch;
            var stepInEpoch = step % stepsPerEpoch;
            if (epoch != orderEpoch)
            {
                // A pure function of (seed, epoch), as the text recipe's plans: a resumed run sees the same data.
                order = Enumerable.Range(0, train.Count).ToArray();
                new Random(unchecked(s.Seed * 1_000_003 + epoch * 7_919 + 17)).Shuffle(order);
                orderEpoch = epoch;
            }
            var micro = order.Skip(stepInEpoch * G).Take(G).Select(i => train[i]).ToList();
            step++;
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
                loss = GradientAccumulation.Step(batches, n, b => TokenLossSum(model, b), device, optimizer);
                using (var norm = optimizer.Step(lr, s.MaxGradNorm > 0 ? s.MaxGradNorm : double.PositiveInfinity))
                    gradNorm = norm.item<float>();
                optimizer.ZeroGrad();
                trainedTokens += n;
            }
            finally
            {
                foreach (var b in batches) b.Dispose();
            }
            StepReport.ThrowIfDiverged(step, loss, gradNorm, s, lr);
            losses.Add(loss);
            lastLoss = loss;
            stepsTimed++;
            var secondsPerStep = clock.Elapsed.TotalSeconds / stepsTimed;
            events.Emit(EventTypes.Progress, $"step {step}/{totalSteps} loss {loss:F4}",
                StepReport.Progress(step, totalSteps, stepsPerEpoch, loss, lr, gradNorm, stepTokens, secondsPerStep, trainedTokens));
            if (validation != null && ((evalEvery is { } e && step % e == 0) || step == totalSteps))
            {
                var valLoss = Evaluate(model, validation, config, processor, device);
                lastVal = valLoss;
                events.Emit(EventTypes.ValidationSummary, $"step {step} val.loss {valLoss:F4}", EventData.ToJson(new ValidationSummaryData(step, valLoss)));
                // The best evaluated weights, kept aside when they are to be the result (the metric is val.loss).
                if (bestMetric is not { } b || (s.Validation.GreaterIsBetter ? valLoss > b : valLoss < b))
                {
                    (bestMetric, bestStep) = (valLoss, step);
                    if (s.Validation.SaveBestModelAtEnd && step != totalSteps)
                    {
                        if (Directory.Exists(bestDir)) Directory.Delete(bestDir, recursive: true);
                        VisionCheckpoint.SaveWeights(model, bestDir, spec.ModelPath, spec.AdapterBaseName, s.TrainVision);
                    }
                }
            }
            if (s.SaveSteps is { } every && every > 0 && step % every == 0) SaveCheckpoint(loss);
        }

        long weightsStep = step;
        if (s.Validation.SaveBestModelAtEnd && bestStep is { } bs && bs != step && Directory.Exists(bestDir))
        {
            events.Emit(EventTypes.BestModelRestored,
                $"restoring the best model: step {bs} ({s.Validation.MetricForBestModel} {bestMetric:F4}) instead of the last step {step}",
                EventData.ToJson(new BestModelRestoredData(bs, s.Validation.MetricForBestModel, bestMetric, step)));
            VisionCheckpoint.LoadWeights(model, bestDir);
            weightsStep = bs;
        }
        var final = FinalFolder.Write(spec.OutputDir, staging =>
        {
            VisionModelFolder.Save(model, staging, spec.ModelPath);
            WritePixelBounds(staging, s.Vision, processor);
            if (model.LoraSettings != null)
                VisionModelFolder.SaveAdapter(model, Path.Combine(staging, "adapter"), spec.AdapterBaseName, s.TrainVision);
        });
        // final/ is itself the merged model (LoRA folded in): what a LoRA job's fine-tuned model serves.
        if (Directory.Exists(bestDir)) Directory.Delete(bestDir, recursive: true);
        return new TrainResult(spec.OutputDir, final, model.LoraSettings != null ? final : null, trainedTokens, losses) { WeightsStep = weightsStep };
    }

    /// <summary>
    /// The result's preprocessor_config.json carries the pixel bounds it was trained with when [model]
    /// set them, so inference (ours or transformers') resizes images the same way.
    /// </summary>
    static void WritePixelBounds(string folder, VisionSettings v, ImageProcessorConfig processor)
    {
        if (v.MinPixels is null && v.MaxPixels is null) return;
        var path = Path.Combine(folder, VisionModelFolder.PreprocessorConfigFile);
        var o = File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? new JsonObject() : new JsonObject();
        o["size"] = new JsonObject { ["shortest_edge"] = processor.MinPixels, ["longest_edge"] = processor.MaxPixels };
        if (o.ContainsKey("min_pixels")) o["min_pixels"] = processor.MinPixels;
        if (o.ContainsKey("max_pixels")) o["max_pixels"] = processor.MaxPixels;
        File.WriteAllText(path, o.ToJsonString(new() { WriteIndented = true }));
    }

    /// <summary>Σ cross-entropy over one example's trained tokens (float32); the tower runs without gradients.</summary>
    public static Tensor TokenLossSum(Qwen3VLForConditionalGeneration model, VisionBatch b)
    {
        using var scope = NewDisposeScope();
        ImageFeatures? features = null;
        // A frozen tower runs without autograd; a trained part keeps what its backward needs.
        if (b.Patches is not null)
            using (model.Visual.parameters().Any(p => p.requires_grad) ? null : no_grad())
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
