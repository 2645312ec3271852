// The contract between the control plane and a trainer process (DESIGN.md §1):
// the server writes a TrainerJobSpec as JSON (AnnealJson.Options) into the job's folder and runs
//   anneal trainer run --spec <job folder>/spec.json
// The trainer writes one TrainerEvent per line (JSON) on stdout and its diagnostics on stderr,
// and exits 0 on success, non-zero on failure (after a final `sft.failed` event where it can).
using System.Text.Json.Nodes;

namespace Anneal.Core.Training;

public sealed record TrainerJobSpec(
    string JobId,
    /// <summary>Registry id or fine-tuned id the job was created with (e.g. "Qwen/Qwen3-4B").</summary>
    string Model,
    /// <summary>Resolved local Hugging Face folder (config.json, safetensors, tokenizer.json).</summary>
    string ModelPath,
    string TrainingFile,
    string? ValidationFile,
    /// <summary>Where the trainer writes checkpoints/ and final/ (a Hugging Face or PEFT folder).</summary>
    string OutputDir,
    TrainingSettings Settings,
    /// <summary>A checkpoint folder to resume from, or null to start fresh.</summary>
    string? ResumeFrom = null,
    /// <summary>"auto" (CUDA when available), "cpu" or "cuda".</summary>
    string Device = "auto",
    /// <summary>For LoRA jobs: also write a merged full model into final/merged.</summary>
    bool MergeLora = false,
    /// <summary>How messages name the training file, e.g. "train.jsonl (file_abc123)": the user's upload, not the storage path. Null: the path.</summary>
    string? TrainingFileName = null,
    /// <summary>Same for the validation file.</summary>
    string? ValidationFileName = null,
    /// <summary>How saved LoRA adapters name their base (PEFT's base_model_name_or_path); null: <see cref="Model"/>.
    /// A local run (train-local) names the folder it trained on, which is where the base really is.</summary>
    string? BaseModelName = null,
    /// <summary>Folder of token cache files (shared by jobs; the server's `<data-dir>/token-cache`). Null: `token-cache` in OutputDir (the user's data folder is never written to).</summary>
    string? TokenCacheDir = null,
    /// <summary>SHA-256 of the training file when the caller knows it (a server upload is stored under it); null: the trainer hashes the file.</summary>
    string? TrainingFileSha256 = null,
    /// <summary>Same for the validation file.</summary>
    string? ValidationFileSha256 = null,
    /// <summary>
    /// Vision: image urls that are paths name files beside the dataset (train-local, a user's own
    /// folder). False for a server's upload, stored among other organisations' files: a path then
    /// names only a stored image of this dataset (its content hash in `&lt;dataset&gt;.images/`).
    /// </summary>
    bool LocalImageFiles = false)
{
    [System.Text.Json.Serialization.JsonIgnore]
    public string AdapterBaseName => BaseModelName ?? Model;
}

/// <summary>
/// One line of the trainer's stdout. Type is one of <see cref="Contracts.EventTypes"/>; Data carries
/// the numbers (sft.progress: step, total_steps, epoch, loss, lr, grad_norm, tokens_per_second,
/// eta_seconds; sft.completed: output_dir, trained_tokens; sft.failed: error{code, message}).
/// </summary>
public sealed record TrainerEvent(string Type, string Level, string Message, JsonObject? Data = null);

/// <summary>Signals and environment shared by the server and the trainer process.</summary>
public static class TrainerProtocol
{
    /// <summary>SIGTERM: cancel at the next optimizer step (the job ends `cancelled`).</summary>
    public const int CancelSignal = 15;
    /// <summary>SIGUSR1: save a checkpoint at the next optimizer step, then stop (pause, server shutdown).</summary>
    public const int CheckpointAndStopSignal = 10;
    /// <summary>The server's pid, set in each trainer's environment so the trainer stops when its server is gone.</summary>
    public const string ServerPidVariable = "ANNEAL_SERVER_PID";
}
