// Where a job's base model lives on disk (TrainerJobSpec.ModelPath):
//   anneal/tiny-qwen3(-vl)   → <data-dir>/models/anneal/tiny-qwen3(-vl) (the trainer generates it)
//   ft:/fft:/qft: model ids  → the fine-tuned model's folder (final/, or final/merged for LoRA)
//   checkpoint ids           → the checkpoint folder (full fine-tunes only; LoRA checkpoints are adapters)
//   registry ids             → Core's ModelResolver: ServerOptions.ModelsDir, <data-dir>/models, the
//                              Hugging Face cache, then a Hub download into the models folder
//                              (reported as sft.model.download events) unless downloads are off.
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public static class ModelPaths
{
    /// <summary>The model folder, or an error for the user naming every place that was searched.</summary>
    public static async Task<(string? Path, string? Error)> ResolveAsync(Db db, ServerOptions options, string org, string model,
        Action<DownloadProgress> progress, CancellationToken ct)
    {
        var dataModels = Path.Combine(db.DataDir, "models");
        if (ModelRegistry.IsBuiltIn(model))
            return (ModelResolver.ModelsFolderPath(dataModels, ModelRegistry.Find(model)!.Id), null);
        if (JobCreation.IsFineTunedId(model)) return await FineTuned(db, org, model, ct);

        // Local first: the configured models folder, then the data dir's, then the Hub cache.
        var hubCache = ModelResolver.DefaultHubCacheDir();
        var looked = new List<string>();
        foreach (var dir in new[] { options.ModelsDir, dataModels })
        {
            if (dir is null) continue;
            looked.Add(ModelResolver.ModelsFolderPath(dir, model));
            if (ModelResolver.FindLocal(model, new ModelSources(dir, null, AllowDownload: false)) is { } found) return (found, null);
        }
        if (hubCache is not null)
        {
            looked.Add(Path.Combine(hubCache, "models--" + model.Replace("/", "--")));
            if (ModelResolver.FindInHubCache(hubCache, model) is { } cached) return (cached, null);
        }
        var where = $"looked for a Hugging Face folder (config.json, *.safetensors, tokenizer.json) in {string.Join(", ", looked)}";
        if (!options.AllowModelDownload)
            return (null, $"model '{model}' is not on this machine ({where}) and model downloads are switched off");
        try
        {
            var sources = ModelSources.FromEnvironment(options.ModelsDir ?? dataModels);
            return (await ModelResolver.ResolveAsync(model, sources, progress, ct: ct), null);
        }
        catch (ModelDownloadException e)
        {
            return (null, $"model '{model}' is not on this machine ({where}) and downloading it failed: {e.Message}");
        }
    }

    static async Task<(string? Path, string? Error)> FineTuned(Db db, string org, string model, CancellationToken ct)
    {
        using var conn = db.Connect();
        var path = Db.Scalar<string>(conn, null, "SELECT path FROM fine_tuned_models WHERE id = @id AND org = @org", ("@id", model), ("@org", org));
        // Rows name the folder relative to the data folder (JobArtifacts); a server that lacks it fetches it from the object store.
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
        try { path = await JobArtifacts.EnsureLocalAsync(db, path, ct); }
        catch (ObjectStoreException e) { return (null, $"the files of '{model}' could not be read from the object store: {e.Message}"); }
        return Directory.Exists(path) ? (path, null) : (null, $"the files of '{model}' are missing: {path} does not exist" + (db.Objects.IsDataFolder ? "" : $" here or in the object store {db.Objects.Name}"));
    }
}
