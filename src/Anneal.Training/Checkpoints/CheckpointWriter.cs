// Checkpoints written while training goes on.
//
// Writing a checkpoint from device memory on the training thread stalls training for the whole
// write (tens of GB for a 4B full fine-tune: weights plus fp32 moments and master weights). Here the
// training thread only copies what the folder will hold into host memory (CheckpointSnapshot: the
// weights or the adapter, the optimizer state, trainer_state.json), between optimizer steps, so the
// copy is consistent; a background task then writes the folder atomically (step-N.partial, renamed
// to step-N when complete). At most one write is in flight: the next save waits for the previous
// one. The training thread learns of a finished write by polling between steps and only then
// reports it (checkpoint.saved, pruning of old optimizer states), so events stay on one thread and
// the server never hears of an incomplete folder. A failed write fails the job with its reason at
// the next poll or wait.
using System.Runtime.InteropServices;
using System.Text.Json;
using Anneal.Core.Training;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Checkpoints;

/// <summary>Host copies of everything a checkpoint folder holds, taken on the training thread.</summary>
public sealed class CheckpointSnapshot : IDisposable
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    readonly List<(string Name, Tensor Tensor)> weights;
    readonly LoraSettings? lora;                 // set: weights are the PEFT adapter
    readonly FlatAdamWState optimizer;
    readonly string baseModelFolder, baseModelId;

    public TrainerState State { get; }

    CheckpointSnapshot(List<(string, Tensor)> weights, LoraSettings? lora, FlatAdamWState optimizer, TrainerState state, string baseModelFolder, string baseModelId)
    {
        (this.weights, this.lora, this.optimizer, State, this.baseModelFolder, this.baseModelId) = (weights, lora, optimizer, state, baseModelFolder, baseModelId);
    }

    /// <summary>Copies the model's weights (LoRA: the adapter only) and the optimizer state to host memory.</summary>
    public static CheckpointSnapshot Take(Qwen3ForCausalLM model, FlatAdamW optimizer, TrainerState state, string baseModelFolder, string baseModelId)
    {
        using var noGrad = no_grad();
        List<(string, Tensor)> weights;
        if (model.LoraSettings != null)
            weights = Lora.AdapterTensors(model).Select(t => (t.Name, HostCopy(t.Tensor))).ToList();   // the parameters themselves
        else
        {
            // Handles the caller frees (views of the parameters): copied, then released.
            weights = [];
            foreach (var (name, t) in Lora.MergedWeights(model))
                using (t) weights.Add((name, HostCopy(t)));
        }
        return new CheckpointSnapshot(weights, model.LoraSettings, optimizer.CopyToHost(), state, baseModelFolder, baseModelId);
    }

    /// <summary>A host tensor that training cannot change: copied off the device, or cloned on the CPU.</summary>
    static Tensor HostCopy(Tensor t) => (t.device.type == DeviceType.CPU ? t.clone() : t.to(CPU)).DetachFromDisposeScope();

    /// <summary>Writes the checkpoint folder: complete under its name, or absent.</summary>
    public void WriteTo(string folder)
    {
        var tmp = folder + ".partial";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        if (lora != null)
        {
            Lora.WriteAdapter(tmp, lora, baseModelId, weights);
            TrainingCheckpoint.CopyTokenizerFiles(baseModelFolder, tmp);
        }
        else
        {
            ModelFolder.WriteWeightsAndConfig(tmp, weights, baseModelFolder, ModelFolder.DefaultMaxShardBytes);
            ModelFolder.CopySideFiles(baseModelFolder, tmp);
        }
        optimizer.Save(Path.Combine(tmp, TrainingCheckpoint.OptimizerFile));
        File.WriteAllText(Path.Combine(tmp, TrainingCheckpoint.StateFile), JsonSerializer.Serialize(State, Json));
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.Move(tmp, folder);
    }

    public void Dispose()
    {
        foreach (var (_, t) in weights) t.Dispose();
        weights.Clear();
        optimizer.Dispose();
    }
}

/// <summary>
/// Writes checkpoints on a background task, one at a time. Every method is called from the training
/// thread; <paramref name="written"/> callbacks run there too (from <see cref="Poll"/> or <see cref="Wait"/>).
/// </summary>
public sealed class CheckpointWriter : IDisposable
{
    Task? inFlight;
    string? inFlightFolder;
    int inFlightStep;
    Action? onWritten;

    /// <summary>True while a write has not been reported back by Poll or Wait.</summary>
    public bool Busy => inFlight != null;

    /// <summary>
    /// Waits for the previous write, takes the host copy now, and writes <paramref name="folder"/> in
    /// the background; <paramref name="written"/> runs on this thread once the folder is complete.
    /// </summary>
    public void Save(string folder, Qwen3ForCausalLM model, FlatAdamW optimizer, TrainerState state,
        string baseModelFolder, string baseModelId, Action written)
    {
        Wait();
        var snapshot = CheckpointSnapshot.Take(model, optimizer, state, baseModelFolder, baseModelId);
        (inFlightFolder, inFlightStep, onWritten) = (folder, state.Step, written);
        inFlight = Task.Run(() =>
        {
            using (snapshot) snapshot.WriteTo(folder);
        });
    }

    /// <summary>Reports a finished write (runs its callback); throws if it failed. Does not block.</summary>
    public void Poll()
    {
        if (inFlight is { IsCompleted: true }) Wait();
    }

    /// <summary>Blocks until the write in flight is complete, then reports it; throws if it failed.</summary>
    public void Wait()
    {
        if (inFlight is null) return;
        var (task, folder, step, callback) = (inFlight, inFlightFolder, inFlightStep, onWritten);
        (inFlight, inFlightFolder, onWritten) = (null, null, null);
        try { task.GetAwaiter().GetResult(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ExternalException)
        {
            throw new IOException($"checkpoint step {step} could not be written to {folder}: {e.Message}", e);
        }
        callback?.Invoke();
    }

    /// <summary>Waits for a write still in flight without reporting it (the run is ending on an error already).</summary>
    public void Dispose()
    {
        try { inFlight?.Wait(); }
        catch (AggregateException) { }
        inFlight = null;
    }
}
