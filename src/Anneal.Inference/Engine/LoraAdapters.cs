// LoRA adapters applied on a shared base model at serving time, as multi-LoRA servers (S-LoRA,
// vLLM's --enable-lora) do: the base weights stay unmerged and each row of a batch adds its own
// adapter's (α/r)·B·A·x. An adapter is a PEFT folder (adapter_config.json +
// adapter_model.safetensors, as Lora.SaveAdapter writes it), loaded on first use and evicted
// least-recently-used when the adapters in memory exceed a byte budget (never while in use).
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

/// <summary>One adapter's matrices, keyed by (layer, module) e.g. (3, "q_proj").</summary>
public sealed class LoraAdapter : IDisposable
{
    public string Folder { get; }
    public double Scaling { get; }
    public long Bytes { get; }
    readonly Dictionary<(int Layer, string Module), (Tensor A, Tensor B)> _weights;
    internal int InUse;
    internal long LastUsed;

    LoraAdapter(string folder, double scaling, Dictionary<(int, string), (Tensor, Tensor)> weights)
    {
        Folder = folder;
        Scaling = scaling;
        _weights = weights;
        Bytes = weights.Values.Sum(w => (w.Item1.numel() + w.Item2.numel()) * w.Item1.ElementSize);
    }

    /// <summary>A (r, in) and B (out, r) of a projection, or null when the adapter does not target it.</summary>
    public (Tensor A, Tensor B)? Get(int layer, string module) =>
        _weights.TryGetValue((layer, module), out var w) ? w : null;

    /// <summary>Reads a PEFT adapter folder for `baseConfig`; a folder that does not fit throws TrainerUserException.</summary>
    public static LoraAdapter Load(string folder, Qwen3Config baseConfig, Device device, ScalarType dtype)
    {
        var configPath = Path.Combine(folder, Lora.AdapterConfigFile);
        if (!File.Exists(configPath))
            throw TrainerUserException.Config($"{folder} is not a LoRA adapter: {Lora.AdapterConfigFile} is missing");
        JsonNode config;
        try { config = JsonNode.Parse(File.ReadAllText(configPath)) ?? throw new JsonException("the file holds null"); }
        catch (JsonException e) { throw TrainerUserException.Config($"{configPath}: not valid JSON ({e.Message})"); }
        int r;
        double alpha;
        try
        {
            r = config["r"]!.GetValue<int>();
            alpha = config["lora_alpha"]!.GetValue<double>();
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
        {
            throw TrainerUserException.Config($"{configPath}: expected numbers r and lora_alpha");
        }
        if (r < 1) throw TrainerUserException.Config($"{configPath}: r {r} must be at least 1");
        if (config["use_dora"]?.GetValue<bool>() == true || config["use_rslora"]?.GetValue<bool>() == true)
            throw TrainerUserException.Config($"{configPath}: DoRA and rsLoRA adapters are not supported; merge the adapter instead");

        SafetensorsSet set;
        try { set = SafetensorsSet.OpenFolder(folder, Lora.AdapterWeightsFile); }
        catch (FileNotFoundException e) { throw TrainerUserException.Config($"{folder}: {e.Message}"); }
        catch (InvalidDataException e) { throw TrainerUserException.Config(e.Message); }

        // base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight
        var weights = new Dictionary<(int, string), (Tensor, Tensor)>();
        try
        {
            foreach (var name in set.Names.Where(n => n.EndsWith(".lora_A.weight")))
            {
                var parts = name.Split('.');
                var layerAt = Array.IndexOf(parts, "layers");
                if (layerAt < 0 || !int.TryParse(parts[layerAt + 1], out var layer) || layer >= baseConfig.NumHiddenLayers)
                    throw TrainerUserException.Config($"{folder}/{Lora.AdapterWeightsFile}: tensor {name} is not in a decoder layer of a {baseConfig.NumHiddenLayers}-layer model");
                var module = parts[^3];
                var bName = name[..^".lora_A.weight".Length] + ".lora_B.weight";
                if (!set.Contains(bName))
                    throw TrainerUserException.Config($"{folder}/{Lora.AdapterWeightsFile}: {bName} is missing");
                var (inF, outF) = Shape(baseConfig, module)
                    ?? throw TrainerUserException.Config($"{folder}/{Lora.AdapterWeightsFile}: {module} is not a projection of a Qwen3 layer");
                var a = set.Read(name, dtype, device);
                var b = set.Read(bName, dtype, device);
                weights[(layer, module)] = (a, b);
                if (!a.shape.SequenceEqual([r, inF]) || !b.shape.SequenceEqual([outF, r]))
                    throw TrainerUserException.Config($"{folder}/{Lora.AdapterWeightsFile}: {module} of layer {layer} has A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}], the base model needs [{r}, {inF}] and [{outF}, {r}]");
            }
        }
        catch
        {
            foreach (var (a, b) in weights.Values) { a.Dispose(); b.Dispose(); }
            throw;
        }
        if (weights.Count == 0)
            throw TrainerUserException.Config($"{folder}/{Lora.AdapterWeightsFile} holds no lora_A/lora_B tensors");
        return new LoraAdapter(Path.GetFullPath(folder), alpha / r, weights);
    }

    /// <summary>(in, out) features of a Qwen3 projection.</summary>
    static (long In, long Out)? Shape(Qwen3Config c, string module) => module switch
    {
        "q_proj" => (c.HiddenSize, c.NumAttentionHeads * c.HeadDim),
        "k_proj" or "v_proj" => (c.HiddenSize, c.NumKeyValueHeads * c.HeadDim),
        "o_proj" => (c.NumAttentionHeads * c.HeadDim, c.HiddenSize),
        "gate_proj" or "up_proj" => (c.HiddenSize, c.IntermediateSize),
        "down_proj" => (c.IntermediateSize, c.HiddenSize),
        _ => null,
    };

    public void Dispose()
    {
        foreach (var (a, b) in _weights.Values) { a.Dispose(); b.Dispose(); }
    }
}

/// <summary>The adapters of one base model in memory; used only from the engine's thread.</summary>
public sealed class AdapterCache(Qwen3Config baseConfig, Device device, ScalarType dtype, long budgetBytes) : IDisposable
{
    readonly Dictionary<string, LoraAdapter> _loaded = new();
    long _clock;

    public long BudgetBytes => budgetBytes;
    public long LoadedBytes => _loaded.Values.Sum(a => a.Bytes);
    public IReadOnlyCollection<string> Loaded => _loaded.Keys;
    /// <summary>Adapters loaded from disk so far (a reload after eviction counts again).</summary>
    public int Loads { get; private set; }

    /// <summary>The adapter of `folder`, loaded on first use; marks it in use until <see cref="Release"/>.</summary>
    public LoraAdapter Acquire(string folder)
    {
        var key = Path.GetFullPath(folder);
        if (!_loaded.TryGetValue(key, out var adapter))
        {
            adapter = LoraAdapter.Load(key, baseConfig, device, dtype);
            Loads++;
            _loaded[key] = adapter;
            Evict(keep: adapter);
        }
        adapter.InUse++;
        adapter.LastUsed = ++_clock;
        return adapter;
    }

    public void Release(LoraAdapter adapter) => adapter.InUse--;

    /// <summary>Drops least-recently-used idle adapters until the loaded ones fit the budget.</summary>
    void Evict(LoraAdapter keep)
    {
        while (LoadedBytes > budgetBytes)
        {
            var victim = _loaded.Values.Where(a => a != keep && a.InUse == 0).MinBy(a => a.LastUsed);
            if (victim is null) return;   // everything else is serving a request: over budget until they end
            _loaded.Remove(victim.Folder);
            victim.Dispose();
        }
    }

    public void Dispose()
    {
        foreach (var a in _loaded.Values) a.Dispose();
        _loaded.Clear();
    }
}
