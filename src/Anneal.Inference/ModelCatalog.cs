// Which model a request's `model` field names, and the engines serving them. A model is a full
// Hugging Face folder (a base model or a full fine-tune) or a PEFT adapter folder over a base
// folder; every adapter on one base shares that base's engine (one copy of the weights, one
// batch). A QLoRA adapter (qft:) runs on its base quantised to NF4, as it was trained, in an engine
// of its own; a Qwen3-VL folder gets a VisionEngine (images in prompts). Models come from the command line (`--model ID=DIR`), or, behind `anneal serve`, from
// the folders the control plane resolved for the caller's organisation (X-Anneal-Model-Dir,
// X-Anneal-Adapter-Dir: only honoured on requests carrying the process's own key).
using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Anneal.Inference.Engine;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Core.Models;

namespace Anneal.Inference;

/// <param name="AdapterDir">a PEFT adapter applied on BaseDir, or null for the full model in BaseDir.</param>
/// <param name="BaseModel">the registry id of BaseDir, when known (the built-in tiny models are generated on first use).</param>
/// <param name="Nf4Base">load BaseDir's decoder projections in NF4 (a QLoRA adapter's base, as trained).</param>
public sealed record ModelTarget(string Id, string BaseDir, string? AdapterDir, string? BaseModel = null, bool Nf4Base = false);

/// <param name="openEngine">opens the engine of a base folder instead of ServingEngine/VisionEngine (tests: an engine with fixed answers).</param>
public sealed class ModelCatalog(IReadOnlyList<ModelTarget> models, EngineOptions engineOptions,
    Func<string, ModelTarget, IGenerationEngine>? openEngine = null) : IDisposable
{
    readonly ConcurrentDictionary<string, Lazy<IGenerationEngine>> _engines = new();

    public IReadOnlyList<ModelTarget> Models => models;
    public EngineOptions EngineOptions => engineOptions;
    public IEnumerable<IGenerationEngine> LoadedEngines => _engines.Values.Where(l => l.IsValueCreated).Select(l => l.Value);

    public ModelTarget? Find(string id) => models.FirstOrDefault(m => m.Id == id);

    /// <summary>The engine of a base folder (NF4 or not), loaded on first use (a failed load is retried next time).</summary>
    public IGenerationEngine Engine(ModelTarget target)
    {
        var folder = Path.GetFullPath(target.BaseDir);
        NativeLibraries.EnsureTorchLoaded();
        if (string.Equals(target.BaseModel, ModelRegistry.TinyModelId, StringComparison.OrdinalIgnoreCase))
            TinyModel.EnsureCreated(folder);
        if (string.Equals(target.BaseModel, ModelRegistry.TinyVisionModelId, StringComparison.OrdinalIgnoreCase))
            TinyVisionModel.EnsureCreated(folder);
        var key = target.Nf4Base ? folder + "#nf4" : folder;
        var lazy = _engines.GetOrAdd(key, _ => new Lazy<IGenerationEngine>(() => Open(folder, target)));
        try { return lazy.Value; }
        catch
        {
            _engines.TryRemove(new KeyValuePair<string, Lazy<IGenerationEngine>>(key, lazy));
            throw;
        }
    }

    IGenerationEngine Open(string folder, ModelTarget target)
    {
        if (openEngine is not null) return openEngine(folder, target);
        if (!VisionModelFolder.IsVisionFolder(folder)) return ServingEngine.Open(folder, engineOptions, target.Nf4Base);
        if (target.AdapterDir is not null || target.Nf4Base)
            throw TrainerUserException.Config($"{target.Id}: adapters are not served on Qwen3-VL models; serve the fine-tuned model's merged folder");
        return VisionEngine.Open(folder, engineOptions);
    }

    /// <summary>
    /// Command-line models, each "DIR" or "ID=DIR" (ID defaults to the folder name). An adapter
    /// folder's base is its adapter_config.json base_model_name_or_path: another listed ID, or a folder.
    /// </summary>
    public static List<ModelTarget> FromSpecs(IEnumerable<string> specs)
    {
        var parsed = specs.Select(s =>
        {
            var eq = s.IndexOf('=');
            var dir = Path.GetFullPath(eq > 0 ? s[(eq + 1)..] : s);
            var id = eq > 0 ? s[..eq] : Path.GetFileName(dir.TrimEnd('/'));
            if (!Directory.Exists(dir)) throw TrainerUserException.Config($"--model {s}: folder {dir} does not exist");
            return (Id: id, Dir: dir);
        }).ToList();
        foreach (var dup in parsed.GroupBy(p => p.Id).Where(g => g.Count() > 1))
            throw TrainerUserException.Config($"--model: id {dup.Key} is given {dup.Count()} times");
        var result = new List<ModelTarget>();
        foreach (var (id, dir) in parsed)
        {
            if (File.Exists(Path.Combine(dir, ModelFolder.ConfigFile)))
            {
                result.Add(new ModelTarget(id, dir, null));
                continue;
            }
            var adapterConfig = Path.Combine(dir, Lora.AdapterConfigFile);
            if (!File.Exists(adapterConfig))
                throw TrainerUserException.Config($"--model {id}: {dir} holds neither {ModelFolder.ConfigFile} (a model) nor {Lora.AdapterConfigFile} (a LoRA adapter)");
            var baseName = JsonNode.Parse(File.ReadAllText(adapterConfig))?["base_model_name_or_path"]?.GetValue<string>() ?? "";
            var baseDir = parsed.FirstOrDefault(p => p.Id == baseName).Dir ?? (Directory.Exists(baseName) ? Path.GetFullPath(baseName) : null)
                ?? throw TrainerUserException.Config($"--model {id}: the adapter's base model '{baseName}' (adapter_config.json base_model_name_or_path) is neither a listed --model id nor a folder; list the base too, e.g. --model {baseName}=DIR");
            result.Add(new ModelTarget(id, baseDir, dir));
        }
        return result;
    }

    public void Dispose()
    {
        foreach (var e in LoadedEngines.ToList()) e.Dispose();
        _engines.Clear();
    }
}
