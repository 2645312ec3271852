// Where a job's base model lives on disk (TrainerJobSpec.ModelPath):
//   anneal/tiny-qwen3        → <data-dir>/models/anneal/tiny-qwen3 (the trainer generates it)
//   ft:/fft:/qft: model ids  → the fine-tuned model's folder (final/, or final/merged for LoRA)
//   checkpoint ids           → the checkpoint folder (full fine-tunes only; LoRA checkpoints are adapters)
//   registry ids             → ModelsDir/<Org>/<Name>, <data-dir>/models/<Org>/<Name>, then the
//                              Hugging Face cache (HF_HOME/hub, ~/.cache/huggingface/hub)
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public static class ModelPaths
{
    /// <summary>The model folder, or an error naming every place that was searched.</summary>
    public static (string? Path, string? Error) Resolve(Db db, ServerOptions options, string org, string model)
    {
        if (string.Equals(model, ModelRegistry.TinyModelId, StringComparison.OrdinalIgnoreCase))
            return (Path.Combine(db.DataDir, "models", "anneal", "tiny-qwen3"), null);

        using var conn = db.Connect();
        if (JobCreation.IsFineTunedId(model))
        {
            var path = Db.Scalar<string>(conn, null, "SELECT path FROM fine_tuned_models WHERE id = @id AND org = @org", ("@id", model), ("@org", org));
            if (path is null)
            {
                var checkpoint = Db.Query(conn, null, """
                    SELECT c.path, j.mode FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.id = @id AND c.org = @org
                    """, r => (Path: r.GetString(0), Mode: r.GetString(1)), ("@id", model), ("@org", org)).FirstOrDefault();
                if (checkpoint.Path is null) return (null, $"no fine-tuned model or checkpoint '{model}' in this organisation");
                if (checkpoint.Mode != TrainingModes.FullFinetune)
                    return (null, $"checkpoint '{model}' holds a {checkpoint.Mode} adapter, not a full model; continue from the job's fine-tuned model instead");
                path = checkpoint.Path;
            }
            return Directory.Exists(path) ? (path, null) : (null, $"the files of '{model}' are missing: {path} does not exist");
        }

        var candidates = new List<string>();
        var parts = model.Split('/');
        if (options.ModelsDir is { } modelsDir) candidates.Add(Path.Combine([modelsDir, .. parts]));
        candidates.Add(Path.Combine([db.DataDir, "models", .. parts]));
        var hfHome = Environment.GetEnvironmentVariable("HF_HOME");
        var hubs = new List<string>();
        if (!string.IsNullOrEmpty(hfHome)) hubs.Add(Path.Combine(hfHome, "hub"));
        hubs.Add(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub"));
        foreach (var hub in hubs)
        {
            // Hugging Face cache layout: hub/models--Org--Name/snapshots/<revision>/config.json
            var snapshots = Path.Combine(hub, "models--" + model.Replace("/", "--"), "snapshots");
            if (Directory.Exists(snapshots))
                candidates.AddRange(Directory.GetDirectories(snapshots).OrderByDescending(Directory.GetLastWriteTimeUtc));
            else candidates.Add(snapshots);
        }
        foreach (var c in candidates)
            if (File.Exists(Path.Combine(c, "config.json"))) return (c, null);
        return (null, $"model '{model}' is not available locally; looked for a Hugging Face folder (config.json, *.safetensors, tokenizer.json) in: {string.Join(", ", candidates)}");
    }
}
