// A resumable training checkpoint, `<output>/checkpoints/step-<N>/`:
//   full fine-tune: a complete Hugging Face folder (usable as a model on its own);
//   LoRA: the PEFT adapter (adapter_config.json, adapter_model.safetensors) plus tokenizer files;
//   optimizer.bin      the optimizer's moments and step counts;
//   trainer_state.json step, scheduler position, data position, RNG seed scheme, best metric and
//                      the settings that must not change across a resume.
// RNG: every optimizer step reseeds torch with (seed, step), so the step number restores it exactly.
using System.Text.Json;
using System.Text.Json.Serialization;
using Anneal.Training.Model;
using TorchSharp;

namespace Anneal.Training.Checkpoints;

public sealed record TrainerState
{
    [JsonPropertyName("step")] public int Step { get; init; }
    [JsonPropertyName("total_steps")] public int TotalSteps { get; init; }
    [JsonPropertyName("epoch")] public int Epoch { get; init; }
    [JsonPropertyName("step_in_epoch")] public int StepInEpoch { get; init; }
    [JsonPropertyName("steps_per_epoch")] public int StepsPerEpoch { get; init; }
    [JsonPropertyName("seed")] public int Seed { get; init; }
    [JsonPropertyName("rng")] public string Rng { get; init; } = "torch.manual_seed(seed * 1000003 + step) before each optimizer step";
    [JsonPropertyName("per_device_batch")] public int PerDeviceBatch { get; init; }
    [JsonPropertyName("gradient_accumulation_steps")] public int GradientAccumulationSteps { get; init; }
    [JsonPropertyName("sequence_length")] public int SequenceLength { get; init; }
    [JsonPropertyName("packing")] public bool Packing { get; init; }
    [JsonPropertyName("token_budget")] public bool TokenBudget { get; init; }
    [JsonPropertyName("mode")] public string Mode { get; init; } = "";
    [JsonPropertyName("trained_tokens")] public long TrainedTokens { get; init; }
    [JsonPropertyName("last_loss")] public double? LastLoss { get; init; }
    [JsonPropertyName("best_metric")] public double? BestMetric { get; init; }
    [JsonPropertyName("best_step")] public int? BestStep { get; init; }
}

public static class TrainingCheckpoint
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.bin";
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Writes the model (or adapter) weights of a run, HF/PEFT layout.</summary>
    public static void SaveWeights(Qwen3ForCausalLM model, string folder, string baseModelFolder, string baseModelId)
    {
        if (model.LoraSettings != null)
        {
            Lora.SaveAdapter(model, folder, baseModelId);
            foreach (var f in ModelFolder.TokenizerFiles)
                if (File.Exists(Path.Combine(baseModelFolder, f)))
                    File.Copy(Path.Combine(baseModelFolder, f), Path.Combine(folder, f), overwrite: true);
        }
        else
            ModelFolder.Save(model, folder, baseModelFolder);
    }

    /// <summary>Copies weights saved by <see cref="SaveWeights"/> back into the model.</summary>
    public static void LoadWeights(Qwen3ForCausalLM model, string folder)
    {
        if (model.LoraSettings != null) Lora.LoadAdapter(model, folder);
        else ModelFolder.CopyWeightsInto(model, folder);
    }

    public static void Save(string folder, Qwen3ForCausalLM model, Optim.FlatAdamW optimizer, TrainerState state,
        string baseModelFolder, string baseModelId)
    {
        var tmp = folder + ".partial";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        SaveWeights(model, tmp, baseModelFolder, baseModelId);
        optimizer.Save(Path.Combine(tmp, OptimizerFile));
        File.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(state, Json));
        // A checkpoint folder appears complete or not at all.
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.Move(tmp, folder);
    }

    // A broken resume point is the server's own state (it picks resume_from), never a user error:
    // these throw InvalidDataException, which the trainer reports as an internal error.
    public static TrainerState ReadState(string folder)
    {
        var path = Path.Combine(folder, StateFile);
        if (!File.Exists(path))
            throw new InvalidDataException($"resume_from {folder} is not a training checkpoint: {StateFile} is missing");
        return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json)
            ?? throw new InvalidDataException($"{path} is empty");
    }

    public static void LoadOptimizer(string folder, Optim.FlatAdamW optimizer)
    {
        var path = Path.Combine(folder, OptimizerFile);
        if (!File.Exists(path))
            throw new InvalidDataException($"resume_from {folder} is incomplete: {OptimizerFile} is missing");
        try { optimizer.Load(path); }
        catch (InvalidDataException e) { throw new InvalidDataException($"resume_from {folder}: {e.Message}", e); }
    }

    /// <summary>
    /// Deletes optimizer.bin from all but the `keep` most recent step-N checkpoints, never from
    /// <paramref name="protect"/> (the checkpoint the run resumed from: the server may know no newer one).
    /// </summary>
    public static void PruneOptimizerStates(string checkpointsFolder, int keep, string? protect = null)
    {
        var kept = protect is null ? null : Path.GetFullPath(protect).TrimEnd(Path.DirectorySeparatorChar);
        var older = Directory.GetDirectories(checkpointsFolder, "step-*")
            .Select(d => (Dir: d, Step: int.TryParse(Path.GetFileName(d)["step-".Length..], out var n) ? n : -1))
            .Where(x => x.Step >= 0)
            .OrderByDescending(x => x.Step)
            .Skip(Math.Max(1, keep));
        foreach (var (dir, _) in older)
            if (!string.Equals(Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar), kept, StringComparison.Ordinal))
                File.Delete(Path.Combine(dir, OptimizerFile));
    }
}
