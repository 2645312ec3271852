// Supervised fine-tuning of a Qwen3 model, torchtune-recipe style: setup in small steps, then the
// whole training loop in one method (Train). The loss of an optimizer step is the sum of token losses
// over its trained tokens divided by the number of trained tokens in the WHOLE step, so gradient
// accumulation changes neither the loss nor the gradient.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Kernels;
using Anneal.Training.Memory;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using Anneal.Training.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training;

/// <summary>Knobs that are not (yet) job hyperparameters.</summary>
public sealed record TrainerOptions
{
    /// <summary>Pack examples into full rows with a block-diagonal mask instead of length bucketing.</summary>
    public bool Packing { get; init; }
    /// <summary>
    /// Length bucketing with a token budget: each micro-batch takes as many length-sorted examples as fit
    /// in per_device_batch × sequence_length padded tokens (ignored when packing).
    /// </summary>
    public bool TokenBudget { get; init; }
    /// <summary>Sequence length when the job sets none (capped by max_position_embeddings).</summary>
    public int DefaultSequenceLength { get; init; } = 2048;
    /// <summary>Run on CPU in bfloat16 instead of float32.</summary>
    public bool CpuBf16 { get; init; }
    /// <summary>
    /// Checkpoints whose optimizer state is kept (the most recent ones). Older checkpoints keep their
    /// weights (usable as models) but not optimizer.bin: 12 bytes per parameter (fp32 moments and
    /// master weights) would fill the disk on multi-billion-parameter runs.
    /// </summary>
    public int KeepOptimizerStates { get; init; } = 2;
    /// <summary>Device memory the job may use, in bytes (null: what the device has free now).</summary>
    public long? DeviceMemoryBytes { get; init; }
    /// <summary>
    /// Stop at the next optimizer step like cancellation, but save a checkpoint first (pause, server
    /// shutdown, server gone), so the job continues from there rather than redoing up to save_steps − 1 steps.
    /// </summary>
    public CancellationToken CheckpointAndStop { get; init; }
}

/// <summary>What a finished run produced.</summary>
public sealed record TrainResult(string OutputDir, string FinalPath, string? MergedPath, long TrainedTokens, IReadOnlyList<double> Losses);

public static class Trainer
{
    /// <summary>Trains as the spec says; throws TrainerUserException for problems the user can fix.</summary>
    public static TrainResult Run(TrainerJobSpec spec, TrainerEvents events, CancellationToken ct, TrainerOptions? options = null)
    {
        options ??= new TrainerOptions();
        // Vision mode is switched on by the model alone (the registry; a Qwen3-VL folder for others).
        if (ModelRegistry.IsVision(spec.Model) || VisionModelFolder.IsVisionFolder(spec.ModelPath))
            return VisionTrainer.Run(spec, events, ct, options);
        var s = spec.Settings;
        CheckSettings(s);
        // The job's `packing` hyperparameter, or the option (kept for callers that set it directly).
        options = options with { Packing = options.Packing || s.Packing };

        // 1. Model folder, device, dtype.
        if (string.Equals(spec.Model, ModelRegistry.TinyModelId, StringComparison.OrdinalIgnoreCase))
            TinyModel.EnsureCreated(spec.ModelPath);
        var config = ModelFolder.LoadConfig(spec.ModelPath);
        var device = PickDevice(spec.Device);
        var dtype = device.type == DeviceType.CUDA || options.CpuBf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        events.Emit(EventTypes.ModelLoading, $"Loading {spec.Model} on {device.type.ToString().ToLowerInvariant()} ({dtype})",
            new JsonObject { ["model"] = spec.Model, ["model_path"] = spec.ModelPath, ["device"] = device.ToString(), ["dtype"] = dtype.ToString() });

        var sequenceLength = s.SequenceLength ?? Math.Min(config.MaxPositionEmbeddings, options.DefaultSequenceLength);
        if (sequenceLength > config.MaxPositionEmbeddings)
            throw TrainerUserException.Config($"sequence_length {sequenceLength} exceeds the model's max_position_embeddings {config.MaxPositionEmbeddings} ({spec.Model}, config.json); use at most {config.MaxPositionEmbeddings}");

        // 2. Tokenizer and data.
        var tokenizer = LoadTokenizer(spec.ModelPath);
        var trainName = "training file " + (spec.TrainingFileName ?? spec.TrainingFile);
        var (train, stats) = LoadData(spec.TrainingFile, trainName, tokenizer, sequenceLength, config.MaxPositionEmbeddings);
        List<SftExample>? validation = null;
        DataStats? valStats = null;
        // A validation file is evaluated at the end, and periodically per evaluation_strategy ("no": never).
        if (spec.ValidationFile != null && s.Validation.EvaluationStrategy != "no")
            (validation, valStats) = LoadData(spec.ValidationFile, "validation file " + (spec.ValidationFileName ?? spec.ValidationFile),
                tokenizer, sequenceLength, config.MaxPositionEmbeddings);
        var first = train[0];
        // Rows of the first epoch: one per example when bucketing, fewer (each up to sequence_length) when packing.
        var rows = SftData.PlanEpoch(train, s.Seed, 0, s.PerDeviceBatch, s.GradientAccumulationSteps, sequenceLength, options.Packing, options.TokenBudget)
            .Sum(step => step.Sum(micro => micro.Count));
        var (prepared, lossy) = DataSummary(stats, valStats, sequenceLength);
        events.Emit(EventTypes.DataPrepared, prepared + (options.Packing ? $"; packed into {rows} rows" : ""),
            new JsonObject
            {
                ["examples"] = stats.Examples, ["total_examples"] = stats.TotalExamples, ["tokens"] = stats.Tokens,
                ["trained_tokens"] = stats.TrainedTokens, ["truncated"] = stats.Truncated, ["dropped"] = stats.DroppedNoTrainedTokens,
                ["longest_example_tokens"] = stats.LongestTokens, ["sequence_length"] = sequenceLength,
                ["validation_examples"] = validation?.Count,
                ["validation"] = valStats is null ? null : new JsonObject
                {
                    ["examples"] = valStats.Examples, ["total_examples"] = valStats.TotalExamples, ["truncated"] = valStats.Truncated,
                    ["dropped"] = valStats.DroppedNoTrainedTokens, ["longest_example_tokens"] = valStats.LongestTokens,
                },
                ["packing"] = options.Packing, ["rows"] = rows,
                ["example"] = new JsonObject { ["text"] = tokenizer.Decode(first.Ids), ["mask_preview"] = MaskPreview(tokenizer, first) },
            }, lossy ? "warning" : "info");

        // 3. Memory: choose activation checkpointing and optimizer state before any weight loads,
        //    or refuse a job that cannot fit with what would.
        var memory = PlanMemory(spec, options, config, device, dtype, train, sequenceLength, events);

        // 4. Model (LoRA layers in place when asked, on an NF4 base for QLoRA), optimizer.
        var lora = s.Mode is TrainingModes.Lora or TrainingModes.Qlora ? s.Lora : null;
        var resume = spec.ResumeFrom;
        torch.manual_seed(s.Seed);   // LoRA A matrices are drawn at construction
        var loadClock = Stopwatch.StartNew();
        using var model = ModelFolder.Load(spec.ModelPath, device, dtype, lora, nf4Base: s.Mode == TrainingModes.Qlora);
        var checkpointing = memory.ActivationCheckpointing;
        events.Log($"model loaded in {loadClock.Elapsed.TotalSeconds:F1} s: {model.parameters().Sum(p => p.numel()):N0} parameters, " +
            $"{model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()):N0} trainable; activation checkpointing {(checkpointing ? "on" : "off")}, optimizer state {memory.OptimizerPrecision}; " +
            $"{(options.Packing ? "packing" : options.TokenBudget ? "length bucketing with a token budget" : "length bucketing")}, sequence_length {sequenceLength}");
        if (checkpointing)
            model.Decoder.LayerRunner = (layer, h, a) => ActivationCheckpoint.Run(
                (x, c) => layer.call(x, new AttentionInputs(c[0], c[1], c.Count > 2 ? c[2] : null, null)),
                h, a.Mask is null ? [a.Cos, a.Sin] : [a.Cos, a.Sin, a.Mask], layer.parameters());
        // After the weights are loaded: the optimizer re-points every trainable parameter into its flat buffers.
        using var optimizer = CreateOptimizer(model, s, memory.OptimizerPrecision);

        var run = new TrainingRun(spec, options, model, optimizer, tokenizer, train, validation, sequenceLength, device, events);
        try { return Train(run, resume, ct); }
        catch (Exception e) when (IsOutOfMemory(e))
        {
            var longest = train.Max(x => x.Length);
            throw new TrainerUserException(ErrorCodes.OutOfMemory,
                $"out of memory on {device.type.ToString().ToLowerInvariant()} with per_device_batch {s.PerDeviceBatch} × sequence_length {sequenceLength} " +
                $"(longest example {longest} tokens, mode {s.Mode}, activation_checkpointing {s.ActivationCheckpointing}): lower per_device_batch " +
                "(raise gradient_accumulation_steps to keep the effective batch), lower sequence_length, set activation_checkpointing = \"on\", or use mode \"lora\". " +
                $"({e.Message.Split('\n')[0].Trim()})");
        }
    }

    /// <summary>libtorch reports allocation failures as exceptions carrying these messages.</summary>
    public static bool IsOutOfMemory(Exception e) =>
        e is OutOfMemoryException
        || (e is System.Runtime.InteropServices.ExternalException or InvalidOperationException or ArgumentException
            && (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
                || e.Message.Contains("can't allocate memory", StringComparison.OrdinalIgnoreCase)
                || e.Message.Contains("CUBLAS_STATUS_ALLOC_FAILED", StringComparison.Ordinal)));

    /// <summary>Everything the loop needs, prepared by <see cref="Run"/>.</summary>
    sealed record TrainingRun(TrainerJobSpec Spec, TrainerOptions Options, Qwen3ForCausalLM Model, FlatAdamW Optimizer,
        Qwen3Tokenizer Tokenizer, List<SftExample> Train, List<SftExample>? Validation, int SequenceLength, Device Device, TrainerEvents Events);

    /// <summary>The training loop.</summary>
    static TrainResult Train(TrainingRun r, string? resumeFrom, CancellationToken ct)
    {
        var s = r.Spec.Settings;
        var (model, optimizer, events) = (r.Model, r.Optimizer, r.Events);
        int B = s.PerDeviceBatch, G = s.GradientAccumulationSteps;
        var stepsPerEpoch = SftData.PlanEpoch(r.Train, s.Seed, 0, B, G, r.SequenceLength, r.Options.Packing, r.Options.TokenBudget).Count;
        var totalSteps = s.TotalSteps ?? Math.Max(1, (int)Math.Ceiling(s.NEpochs!.Value * stepsPerEpoch));
        var warmupSteps = (int)Math.Ceiling(s.WarmupRatio * totalSteps);
        int? evalEvery = s.Validation.EvaluationStrategy switch
        {
            "epoch" => stepsPerEpoch,
            "steps" when s.Validation.EvalSteps is > 0 => s.Validation.EvalSteps,
            _ => null,
        };
        var checkpoints = Path.Combine(r.Spec.OutputDir, "checkpoints");
        var bestDir = Path.Combine(r.Spec.OutputDir, "best");
        Directory.CreateDirectory(r.Spec.OutputDir);

        var step = 0;
        long trainedTokens = 0;
        double? bestMetric = null, lastLoss = null, lastVal = null;
        int? bestStep = null;
        if (resumeFrom != null)
        {
            var state = TrainingCheckpoint.ReadState(resumeFrom);
            if (state.PerDeviceBatch != B || state.GradientAccumulationSteps != G || state.Seed != s.Seed
                || state.SequenceLength != r.SequenceLength || state.Packing != r.Options.Packing
                || state.TokenBudget != r.Options.TokenBudget || state.Mode != s.Mode)
                throw TrainerUserException.Config($"resume_from {resumeFrom}: the checkpoint was trained with per_device_batch {state.PerDeviceBatch}, gradient_accumulation_steps {state.GradientAccumulationSteps}, seed {state.Seed}, sequence_length {state.SequenceLength}, mode {state.Mode}, packing {state.Packing}; this job has {B}, {G}, {s.Seed}, {r.SequenceLength}, {s.Mode}, {r.Options.Packing}");
            TrainingCheckpoint.LoadWeights(model, resumeFrom);
            TrainingCheckpoint.LoadOptimizer(resumeFrom, optimizer);   // restores the fp32 master weights too
            (step, trainedTokens, lastLoss, bestMetric, bestStep) = (state.Step, state.TrainedTokens, state.LastLoss, state.BestMetric, state.BestStep);
            events.Log($"resumed from {resumeFrom} at step {step}");
        }

        // The resume point of this run is never pruned: until a newer checkpoint is known to the
        // server, it may be the only one a restart can continue from.
        var savedStep = step;
        void SaveCheckpoint(double? loss)
        {
            var folder = Path.Combine(checkpoints, $"step-{step}");
            TrainingCheckpoint.Save(folder, model, optimizer, new TrainerState
            {
                Step = step, TotalSteps = totalSteps, Epoch = step / stepsPerEpoch, StepInEpoch = step % stepsPerEpoch,
                StepsPerEpoch = stepsPerEpoch, Seed = s.Seed, PerDeviceBatch = B, GradientAccumulationSteps = G,
                SequenceLength = r.SequenceLength, Packing = r.Options.Packing, TokenBudget = r.Options.TokenBudget, Mode = s.Mode,
                TrainedTokens = trainedTokens, LastLoss = loss, BestMetric = bestMetric, BestStep = bestStep,
            }, r.Spec.ModelPath, r.Spec.Model);
            var metrics = new JsonObject { [MetricNames.TrainLoss] = loss };
            if (lastVal is { } v) metrics[MetricNames.ValLoss] = v;
            events.Emit(EventTypes.CheckpointSaved, $"checkpoint step {step}",
                new JsonObject { ["step"] = step, ["path"] = folder, ["metrics"] = metrics });
            TrainingCheckpoint.PruneOptimizerStates(checkpoints, r.Options.KeepOptimizerStates, protect: resumeFrom);
            savedStep = step;
        }

        var losses = new List<double>();
        var clock = Stopwatch.StartNew();
        var stepsTimed = 0;
        List<List<List<int[]>>>? plan = null;
        var planEpoch = -1;
        while (step < totalSteps)
        {
            // Cancellation is honoured between optimizer steps only.
            if (ct.IsCancellationRequested)
                throw new OperationCanceledException(ct);
            if (r.Options.CheckpointAndStop.IsCancellationRequested)
            {
                if (step > savedStep) SaveCheckpoint(lastLoss);
                throw new OperationCanceledException(r.Options.CheckpointAndStop);
            }

            var epoch = step / stepsPerEpoch;
            var stepInEpoch = step % stepsPerEpoch;
            if (epoch != planEpoch)
            {
                plan = SftData.PlanEpoch(r.Train, s.Seed, epoch, B, G, r.SequenceLength, r.Options.Packing, r.Options.TokenBudget);
                planEpoch = epoch;
            }
            // Packing can give another epoch a step more or less than epoch 0; the step count per
            // epoch stays that of epoch 0 (wrapping), so step → data position stays a pure function.
            var micro = plan![stepInEpoch % plan.Count];
            step++;
            torch.manual_seed(StepSeed(s.Seed, step));
            var lr = LearningRate(s, step, warmupSteps, totalSteps);

            // Forward/backward over the micro-batches; the step's loss is Σ token losses / N trained tokens.
            model.train();
            var batches = micro.Select(rows => SftData.Collate(r.Train, rows, r.Tokenizer.PadTokenId, r.Device)).ToList();
            double loss, gradNorm;
            int stepTokens;
            try
            {
                var n = batches.Sum(b => b.TrainedTokens);
                stepTokens = batches.Sum(b => b.Tokens);
                loss = AccumulateGradients(model, batches, n, optimizer);
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
            lastLoss = loss;

            stepsTimed++;
            var secondsPerStep = clock.Elapsed.TotalSeconds / stepsTimed;
            events.Emit(EventTypes.Progress, $"step {step}/{totalSteps} loss {loss:F4}", new JsonObject
            {
                ["step"] = step, ["total_steps"] = totalSteps,
                ["epoch"] = Math.Round((double)step / stepsPerEpoch, 4),
                ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = double.IsFinite(gradNorm) ? gradNorm : null,
                ["tokens_per_second"] = Math.Round(stepTokens / Math.Max(1e-9, secondsPerStep), 1),
                ["eta_seconds"] = Math.Round((totalSteps - step) * secondsPerStep, 1),
                ["trained_tokens"] = trainedTokens,
            });

            // Validation every eval_steps and at the end; remember the best model.
            var last = step == totalSteps;
            if (r.Validation != null && ((evalEvery is { } every && step % every == 0) || last))
            {
                var valLoss = Evaluate(model, r.Validation, s.PerDeviceEvalBatch, r.Tokenizer.PadTokenId, r.Device);
                lastVal = valLoss;
                events.Emit(EventTypes.ValidationSummary, $"step {step} val.loss {valLoss:F4}",
                    new JsonObject { ["step"] = step, ["val_loss"] = valLoss });
                var metric = MetricValue(s.Validation.MetricForBestModel, valLoss, loss);
                if (bestMetric is not { } b || (s.Validation.GreaterIsBetter ? metric > b : metric < b))
                {
                    (bestMetric, bestStep) = (metric, step);
                    if (s.Validation.SaveBestModelAtEnd && !last)
                    {
                        if (Directory.Exists(bestDir)) Directory.Delete(bestDir, recursive: true);
                        TrainingCheckpoint.SaveWeights(model, bestDir, r.Spec.ModelPath, r.Spec.Model);
                    }
                }
            }

            if (s.SaveSteps is { } every2 && every2 > 0 && step % every2 == 0) SaveCheckpoint(loss);
        }

        // Final weights: the best evaluated ones when asked, else the last.
        if (s.Validation.SaveBestModelAtEnd && bestStep is { } bs && bs != step && Directory.Exists(bestDir))
        {
            events.Log($"restoring the best model (step {bs}, {s.Validation.MetricForBestModel} {bestMetric})");
            TrainingCheckpoint.LoadWeights(model, bestDir);
        }
        // Written aside and renamed: a final/ folder is complete, so a restarted server can adopt it.
        var final = Path.Combine(r.Spec.OutputDir, "final");
        var staging = final + ".partial";
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        TrainingCheckpoint.SaveWeights(model, staging, r.Spec.ModelPath, r.Spec.Model);
        string? merged = null;
        if (model.LoraSettings != null && r.Spec.MergeLora)
        {
            merged = Path.Combine(final, "merged");
            ModelFolder.Save(model, Path.Combine(staging, "merged"), r.Spec.ModelPath);
        }
        if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
        Directory.Move(staging, final);
        if (Directory.Exists(bestDir)) Directory.Delete(bestDir, recursive: true);
        return new TrainResult(r.Spec.OutputDir, final, merged, trainedTokens, losses);
    }

    /// <summary>
    /// Forward and backward over one optimizer step's micro-batches. Each micro-batch's summed token
    /// loss is divided by the trained tokens of the whole step before backward, so gradients add up
    /// to those of one big batch. Returns the step's mean token loss.
    /// </summary>
    public static double AccumulateGradients(Qwen3ForCausalLM model, IReadOnlyList<SftBatch> batches, int trainedTokens, FlatAdamW? optimizer = null)
    {
        using var scope = NewDisposeScope();
        var total = torch.zeros(1, dtype: ScalarType.Float64, device: batches[0].Ids.device);
        foreach (var b in batches)
        {
            using var inner = NewDisposeScope();
            var sum = TokenLossSum(model, b);
            (sum / trainedTokens).backward();
            optimizer?.AccumulateMicroBatch();   // bf16 gradients summed in fp32 across micro-batches
            total.add_(sum.detach().to(ScalarType.Float64));
        }
        return total.item<double>() / trainedTokens;
    }

    /// <summary>
    /// Σ cross-entropy over the batch's trained tokens, in float32: () scalar. Only the rows with a
    /// target reach the output projection (prompt tokens cost no V-wide matmul), and the chunked
    /// kernel never holds all (N, V) logits at once.
    /// </summary>
    public static Tensor TokenLossSum(Qwen3ForCausalLM model, SftBatch b)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(b.Ids, b.Positions, b.Mask);                               // (B, T, D)
        var targets = b.Targets.view(-1);                                                    // (B·T)
        var rows = targets.ne(SftData.IgnoreIndex).nonzero().view(-1);                      // (N)
        var h = hidden.view(-1, hidden.shape[^1]).index_select(0, rows);                     // (N, D)
        var loss = ChunkedCrossEntropy.Sum(h, model.OutputWeight, targets.index_select(0, rows));
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Mean token loss over a dataset, without gradients.</summary>
    public static double Evaluate(Qwen3ForCausalLM model, IReadOnlyList<SftExample> examples, int batchSize, int padId, Device device)
    {
        model.eval();
        using var _ = no_grad();
        double sum = 0;
        long n = 0;
        var order = Enumerable.Range(0, examples.Count).OrderByDescending(i => examples[i].Length).ToList();
        for (var i = 0; i < order.Count; i += batchSize)
        {
            var rows = order.Skip(i).Take(batchSize).Select(x => new[] { x }).ToList();
            using var batch = SftData.Collate(examples, rows, padId, device);
            using var loss = TokenLossSum(model, batch);
            sum += loss.item<float>();
            n += batch.TrainedTokens;
        }
        model.train();
        return n == 0 ? double.NaN : sum / n;
    }

    /// <summary>Learning rate of optimizer step `step` (1-based): linear warmup, then linear/cosine decay or constant.</summary>
    public static double LearningRate(TrainingSettings s, int step, int warmupSteps, int totalSteps)
    {
        var k = step - 1;
        if (k < warmupSteps) return s.LearningRate * (k + 1) / warmupSteps;
        var progress = totalSteps - warmupSteps <= 0 ? 0 : (double)(k - warmupSteps) / (totalSteps - warmupSteps);
        return s.LrScheduler switch
        {
            "constant" => s.LearningRate,
            "cosine" => s.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => s.LearningRate * (1 - progress),
        };
    }

    static long StepSeed(int seed, int step) => seed * 1000003L + step;

    static double MetricValue(string name, double valLoss, double trainLoss) => name switch
    {
        "val.loss" or "eval_loss" or "eval.loss" or "val_loss" or "loss" => valLoss,
        "train.loss" or "train_loss" => trainLoss,
        _ => throw TrainerUserException.Config($"metric_for_best_model \"{name}\" is not known; use \"val.loss\" or \"train.loss\""),
    };

    internal static void CheckSettings(TrainingSettings s)
    {
        if (s.Mode is not (TrainingModes.FullFinetune or TrainingModes.Lora or TrainingModes.Qlora))
            throw TrainerUserException.Config($"training.mode \"{s.Mode}\" is not known; use \"full_finetune\", \"lora\" or \"qlora\"");
        if (s.NEpochs is null && s.TotalSteps is null)
            throw TrainerUserException.Config("hyperparameters: set n_epochs or total_steps");
        if (s.PerDeviceBatch < 1 || s.GradientAccumulationSteps < 1 || s.PerDeviceEvalBatch < 1)
            throw TrainerUserException.Config($"per_device_batch ({s.PerDeviceBatch}), per_device_eval_batch ({s.PerDeviceEvalBatch}) and gradient_accumulation_steps ({s.GradientAccumulationSteps}) must be at least 1");
        if (s.LrScheduler is not ("linear" or "cosine" or "constant"))
            throw TrainerUserException.Config($"lr_scheduler \"{s.LrScheduler}\" is not known; use linear, cosine or constant");
        var adapters = s.Mode is TrainingModes.Lora or TrainingModes.Qlora;
        if (adapters && s.Lora.R < 1)
            throw TrainerUserException.Config($"training.lora.r {s.Lora.R} must be at least 1");
        var unknown = adapters ? s.Lora.Targets.Except(LoraSettings.AllLinear).ToList() : [];
        if (unknown.Count > 0)
            throw TrainerUserException.Config($"training.lora.target_modules: {string.Join(", ", unknown)} not in a Qwen3 layer; allowed: {string.Join(", ", LoraSettings.AllLinear)}");
    }

    public static Device PickDevice(string requested)
    {
        var cuda = torch.cuda.is_available();
        return requested switch
        {
            "cpu" => torch.CPU,
            "cuda" when !cuda => throw TrainerUserException.Config("device \"cuda\" was requested but no CUDA device is available"),
            "cuda" => torch.CUDA,
            _ => cuda ? torch.CUDA : torch.CPU,
        };
    }

    public static Qwen3Tokenizer LoadTokenizer(string modelPath)
    {
        if (!File.Exists(Path.Combine(modelPath, "tokenizer.json")))
            throw TrainerUserException.Config($"model folder {modelPath} has no tokenizer: tokenizer.json is missing");
        try { return Qwen3Tokenizer.Load(modelPath); }
        catch (Exception e) when (e is InvalidDataException or System.Text.Json.JsonException or FormatException or KeyNotFoundException)
        {
            throw TrainerUserException.Config($"model folder {modelPath}: the tokenizer could not be read: {e.Message}");
        }
    }

    /// <summary>
    /// Loads a data file. Rule: when more than half of a file's examples have no trained token within
    /// sequence_length (they would be dropped), the job fails with user_data_error instead of
    /// training on a remnant; fewer drops are trained around and reported as a warning.
    /// </summary>
    static (List<SftExample> Examples, DataStats Stats) LoadData(string path, string name, Qwen3Tokenizer tokenizer, int sequenceLength, int contextLength)
    {
        if (!File.Exists(path))
            throw TrainerUserException.BadData($"{name} does not exist");
        var report = DatasetValidator.ValidateFile(path);
        if (!report.IsValid)
        {
            var shown = string.Join("; ", report.Errors.Take(5).Select(e => e.ToString()));
            throw TrainerUserException.BadData(report.NumExamples == 0 && report.TotalErrors == 0
                ? $"{name} holds no examples"
                : $"{name}: {report.TotalErrors} error(s): {shown}");
        }
        var (examples, stats) = SftData.Load(path, record =>
        {
            var e = Qwen3ChatTemplate.Encode(tokenizer, record);
            return (e.InputIds, e.Trained);
        }, sequenceLength, name);
        if (examples.Count == 0 || stats.DroppedNoTrainedTokens * 2 > stats.TotalExamples)
        {
            var raise = stats.MinLengthToKeepAll > contextLength
                ? $"some examples need more than the model's context length {contextLength}: shorten their prompts"
                : $"raise [hyperparameters].sequence_length to at least {stats.MinLengthToKeepAll} " +
                  $"({Math.Min(stats.LongestTokens, contextLength)} keeps {(stats.LongestTokens <= contextLength ? "every example whole" : "the most")}; the model allows {contextLength})";
            throw TrainerUserException.BadData(
                $"{name}: {stats.DroppedNoTrainedTokens} of {stats.TotalExamples} examples have no assistant tokens within sequence_length {sequenceLength} " +
                $"(the longest example has {stats.LongestTokens} tokens); {raise}. " +
                "A job stops when more than half of a file's examples would be dropped.");
        }
        return (examples, stats);
    }

    /// <summary>The sft.data.prepared message, and whether anything was dropped or truncated (then it is a warning with advice).</summary>
    internal static (string Message, bool Lossy) DataSummary(DataStats train, DataStats? validation, int sequenceLength)
    {
        static string Losses(DataStats s, int sequenceLength) =>
            $"{s.DroppedNoTrainedTokens} of {s.TotalExamples} dropped (no assistant tokens within sequence_length {sequenceLength}), " +
            $"{s.Truncated} truncated to {sequenceLength}";
        var lossy = train.DroppedNoTrainedTokens + train.Truncated > 0
                    || (validation is not null && validation.DroppedNoTrainedTokens + validation.Truncated > 0);
        var message = $"{train.Examples} of {train.TotalExamples} examples kept, {train.Tokens} tokens ({train.TrainedTokens} trained)";
        if (validation is not null) message += $"; validation: {validation.Examples} of {validation.TotalExamples} kept";
        if (!lossy) return (message, false);
        message += $". Training data: {Losses(train, sequenceLength)}";
        if (validation is not null) message += $"; validation data: {Losses(validation, sequenceLength)}";
        var longest = Math.Max(train.LongestTokens, validation?.LongestTokens ?? 0);
        message += $". The longest example has {longest} tokens: raise [hyperparameters].sequence_length to {longest} to train on every example whole.";
        return (message, true);
    }

    /// <summary>The example's text with trained spans wrapped in [[ ]], to show what the loss sees.</summary>
    static string MaskPreview(Qwen3Tokenizer tokenizer, SftExample e)
    {
        var sb = new System.Text.StringBuilder();
        var t = 0;
        while (t < e.Length)
        {
            var trained = e.Trained[t];
            var start = t;
            while (t < e.Length && e.Trained[t] == trained) t++;
            var text = tokenizer.Decode(e.Ids[start..t]);
            sb.Append(trained ? "[[" + text + "]]" : text);
        }
        return sb.ToString();
    }

    /// <summary>
    /// AdamW (β 0.9/0.999, ε 1e-8) over flat buffers of the trainable parameters; no weight decay on
    /// norms and biases. With gradient accumulation, bf16 gradients are summed in fp32.
    /// </summary>
    static FlatAdamW CreateOptimizer(Qwen3ForCausalLM model, TrainingSettings s, string precision) =>
        new(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)),
            weightDecay: s.WeightDecay,
            precision: precision == OptimizerPrecisions.Lean ? OptimizerPrecision.Lean : OptimizerPrecision.Exact,
            fp32GradAccumulation: precision != OptimizerPrecisions.Lean && s.GradientAccumulationSteps > 1,
            seed: (ulong)s.Seed,
            decay: (name, p) => p.dim() >= 2 && !name.EndsWith(".bias") && !name.EndsWith("norm.weight"));

    /// <summary>
    /// The memory model's decision for this job on this device (see Core's MemoryModel):
    /// activation_checkpointing "auto" is off when the job fits without it, optimizer_precision
    /// "auto" is exact when it fits. Re-running a block in backward must give the same
    /// activations, so LoRA dropout excludes checkpointing.
    /// </summary>
    static MemoryDecision PlanMemory(TrainerJobSpec spec, TrainerOptions options, Qwen3Config config, Device device, ScalarType dtype,
        List<SftExample> train, int sequenceLength, TrainerEvents events)
    {
        var s = spec.Settings;
        if (s.ActivationCheckpointing is not ("auto" or "on" or "off"))
            throw TrainerUserException.Config($"activation_checkpointing \"{s.ActivationCheckpointing}\" is not known; use \"auto\", \"on\" or \"off\"");
        if (s.OptimizerPrecision is not (OptimizerPrecisions.Auto or OptimizerPrecisions.Exact or OptimizerPrecisions.Lean))
            throw TrainerUserException.Config($"optimizer_precision \"{s.OptimizerPrecision}\" is not known; use \"auto\", \"exact\" or \"lean\"");
        var dropout = s.Mode is TrainingModes.Lora or TrainingModes.Qlora && s.Lora.Dropout > 0;
        if (s.ActivationCheckpointing == "on" && dropout)
            throw TrainerUserException.Config($"activation_checkpointing \"on\" cannot be combined with training.lora.dropout {s.Lora.Dropout}: set dropout to 0 or activation_checkpointing to \"off\"");

        // The largest micro-batch: per_device_batch rows of the longest example (bucketing), or of
        // full sequence_length rows when packing or filling a token budget.
        var rowTokens = options.Packing || options.TokenBudget ? sequenceLength : Math.Min(sequenceLength, train.Max(x => x.Length));
        var plan = new MemoryPlan
        {
            Mode = s.Mode, Lora = s.Lora, ElementBytes = (int)torch.empty(0, dtype).ElementSize,
            GradientAccumulationSteps = s.GradientAccumulationSteps, MicroBatchRows = s.PerDeviceBatch, RowTokens = rowTokens,
        };
        var free = options.DeviceMemoryBytes ?? DeviceMemory.FreeBytes(device);
        var decision = MemoryModel.Decide(DeviceMemory.Shape(config), plan, dropout ? "off" : s.ActivationCheckpointing,
            s.OptimizerPrecision, free ?? long.MaxValue);
        var where = device.type.ToString().ToLowerInvariant();
        var e = decision.Estimate;
        events.Emit(EventTypes.MemoryPlanned,
            $"memory estimate {e} on {where} with {(free is { } f ? MemoryEstimate.Gib(f) + " free" : "unknown free memory")}: " +
            $"activation checkpointing {(decision.ActivationCheckpointing ? "on" : "off")}, optimizer state {decision.OptimizerPrecision}",
            new JsonObject
            {
                ["fits"] = decision.Fits, ["device"] = where, ["free_bytes"] = free, ["estimated_peak_bytes"] = e.Peak,
                ["weights_bytes"] = e.Weights, ["gradients_bytes"] = e.Gradients, ["optimizer_bytes"] = e.Optimizer,
                ["activations_bytes"] = e.Activations, ["loss_bytes"] = e.Loss, ["workspace_bytes"] = e.Workspace,
                ["activation_checkpointing"] = decision.ActivationCheckpointing, ["optimizer_precision"] = decision.OptimizerPrecision,
                ["micro_batch_rows"] = plan.MicroBatchRows, ["row_tokens"] = plan.RowTokens,
            }, decision.Fits ? "info" : "error");
        if (!decision.Fits)
            throw new TrainerUserException(ErrorCodes.OutOfMemory,
                $"{spec.Model} does not fit in {MemoryEstimate.Gib(free!.Value)} free on {where}: mode {s.Mode}, per_device_batch {s.PerDeviceBatch} × {rowTokens} tokens " +
                $"needs about {decision.Estimate} even with activation checkpointing {(decision.ActivationCheckpointing ? "on" : "off")} and {decision.OptimizerPrecision} optimizer state; {decision.Advice}");
        return decision;
    }
}
