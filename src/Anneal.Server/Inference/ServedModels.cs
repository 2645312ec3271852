// What a /v1 `model` names for the caller's organisation, as folders the inference process loads:
//   base ids (registry or local Hugging Face folders) → the model folder (never downloaded here:
//     a base model is on this machine once a job used it, or put in --models-dir);
//   ft: (LoRA) → the job's adapter (final/) over its base model's folder, so every adapter of a base
//     shares one copy of the base in memory; the merged folder (final/merged) when the base is gone;
//   qft: (QLoRA) → the same, with the base quantised to NF4 when loaded, as the job trained on it;
//   Qwen3-VL fine-tunes → their full folder (LoRA merged in: final/);
//   fft: and checkpoint ids → the model folder (ModelPaths).
// Another organisation's fine-tuned model is "not found", like an unknown one (DESIGN §3).
using Anneal.Core.Models;
using Anneal.Server.Jobs;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Inference;

/// <param name="AdapterDir">a PEFT adapter served on ModelDir, or null.</param>
/// <param name="BaseModel">the registry id of ModelDir when it is a base model (the tiny models are generated on first use).</param>
/// <param name="Nf4Base">the adapter is a QLoRA one: its base is loaded in NF4.</param>
public sealed record ServedModel(string Id, string ModelDir, string? AdapterDir, string? BaseModel, bool Nf4Base = false);

public static class ServedModels
{
    const string AdapterConfigFile = "adapter_config.json";

    /// <summary>The folders of `model`, or the reason it cannot be served (an unknown model included).</summary>
    public static async Task<(ServedModel? Model, string? Error)> ResolveAsync(Db db, ServerOptions options, string org, string model, CancellationToken ct)
    {
        var local = options with { AllowModelDownload = false };
        if (JobCreation.IsFineTunedId(model))
        {
            (string Path, string Base)? row;
            string? localPath = null;
            using (var conn = db.Connect())
                row = Db.Query(conn, null, "SELECT path, base_model FROM fine_tuned_models WHERE id = @id AND org = @org",
                    r => (r.GetString(0), r.GetString(1)), ("@id", model), ("@org", org)).Cast<(string, string)?>().FirstOrDefault();
            // A server that lacks the model's folder fetches it from the object store (JobArtifacts).
            try { if (row is { } r) localPath = await JobArtifacts.EnsureLocalAsync(db, r.Path, ct); }
            catch (ObjectStoreException e) { return (null, $"the files of '{model}' could not be read from the object store: {e.Message}"); }
            if (row is { } ft && Path.GetDirectoryName(localPath!.TrimEnd('/')) is { } final && File.Exists(Path.Combine(final, AdapterConfigFile)))
            {
                var (baseDir, _) = await ModelPaths.ResolveAsync(db, local, org, ft.Base, _ => { }, ct);
                if (baseDir is not null && (Directory.Exists(baseDir) || IsTiny(ft.Base)))
                    return (new ServedModel(model, baseDir, final, ft.Base, model.StartsWith("qft:", StringComparison.Ordinal)), null);
            }
        }
        var (path, error) = await ModelPaths.ResolveAsync(db, local, org, model, _ => { }, ct);
        if (path is null) return (null, error);
        return (new ServedModel(model, path, null, JobCreation.IsFineTunedId(model) ? null : model), null);
    }

    static bool IsTiny(string id) => string.Equals(id, ModelRegistry.TinyModelId, StringComparison.OrdinalIgnoreCase)
                                     || string.Equals(id, ModelRegistry.TinyVisionModelId, StringComparison.OrdinalIgnoreCase);

    /// <summary>Ids the caller can use: base models on this machine (the tiny model always) and the organisation's fine-tuned models.</summary>
    public static async Task<List<(string Id, string OwnedBy, DateTimeOffset Created)>> ListAsync(Db db, ServerOptions options, string org, CancellationToken ct)
    {
        var list = new List<(string, string, DateTimeOffset)>();
        var local = options with { AllowModelDownload = false };
        foreach (var m in ModelRegistry.All.Where(m => m.Family is "qwen3" or "qwen3_vl" && m.Trainable))
        {
            if (IsTiny(m.Id)) { list.Add((m.Id, "anneal", DateTimeOffset.UnixEpoch)); continue; }
            var (path, _) = await ModelPaths.ResolveAsync(db, local, org, m.Id, _ => { }, ct);
            if (path is not null && Directory.Exists(path)) list.Add((m.Id, "system", DateTimeOffset.UnixEpoch));
        }
        using var conn = db.Connect();
        list.AddRange(Db.Query(conn, null, "SELECT id, created_at FROM fine_tuned_models WHERE org = @org ORDER BY rowid",
            r => (r.GetString(0), org, Db.ParseTime(r.GetString(1))), ("@org", org)));
        return list;
    }
}
