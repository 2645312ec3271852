// Resumable checkpoints of a vision (Qwen3-VL) run, in the text trainer's layout
// (`<output>/checkpoints/step-<N>/`, see TrainingCheckpoint): the same trainer_state.json and
// optimizer.bin, so the server finds, adopts and prunes them the same way; only the weights differ:
//   full fine-tune: a complete Qwen3-VL Hugging Face folder (usable as a model on its own);
//   LoRA: the PEFT adapter (plus any tower part trained in full, as modules_to_save) with the
//         tokenizer and processor files.
using System.Text.Json;
using Anneal.Core.Training;
using Anneal.Training.Model;
using Anneal.Training.Optim;

namespace Anneal.Training.Checkpoints;

public static class VisionCheckpoint
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Writes the run's weights: a merged Qwen3-VL folder, or the adapter for LoRA.</summary>
    public static void SaveWeights(Qwen3VLForConditionalGeneration model, string folder, string baseModelFolder, string baseModelId, string trainVision)
    {
        if (model.LoraSettings is null)
        {
            VisionModelFolder.Save(model, folder, baseModelFolder);
            return;
        }
        VisionModelFolder.SaveAdapter(model, folder, baseModelId, trainVision);
        foreach (var f in ModelFolder.TokenizerFiles.Concat(VisionModelFolder.ProcessorFiles))
            if (File.Exists(Path.Combine(baseModelFolder, f)))
                File.Copy(Path.Combine(baseModelFolder, f), Path.Combine(folder, f), overwrite: true);
    }

    /// <summary>Copies weights saved by <see cref="SaveWeights"/> back into the model.</summary>
    public static void LoadWeights(Qwen3VLForConditionalGeneration model, string folder)
    {
        if (model.LoraSettings is null) VisionModelFolder.CopyWeightsInto(model, folder);
        else VisionModelFolder.LoadAdapter(model, folder);
    }

    /// <summary>Weights, optimizer state and trainer state, written aside and renamed: a checkpoint is complete or absent.</summary>
    public static void Save(string folder, Qwen3VLForConditionalGeneration model, FlatAdamW optimizer, TrainerState state,
        string baseModelFolder, string baseModelId, string trainVision)
    {
        var tmp = folder + ".partial";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        SaveWeights(model, tmp, baseModelFolder, baseModelId, trainVision);
        optimizer.Save(Path.Combine(tmp, TrainingCheckpoint.OptimizerFile));
        File.WriteAllText(Path.Combine(tmp, TrainingCheckpoint.StateFile), JsonSerializer.Serialize(state, Json));
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.Move(tmp, folder);
    }
}
