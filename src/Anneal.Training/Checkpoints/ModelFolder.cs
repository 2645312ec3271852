// Hugging Face model folders: load one (config.json + safetensors, single file or shards) straight
// into a model on the target device and dtype, and write one others can load with
// AutoModelForCausalLM.from_pretrained (config.json, model.safetensors, tokenizer files,
// generation_config.json).
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Checkpoints;

public static class ModelFolder
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    public const string GenerationConfigFile = "generation_config.json";

    /// <summary>Tokenizer files copied along with a model when they exist.</summary>
    public static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"];

    /// <summary>Reads config.json, naming the missing file when the folder is incomplete.</summary>
    public static Qwen3Config LoadConfig(string folder)
    {
        if (!Directory.Exists(folder))
            throw TrainerUserException.Config($"model folder {folder} does not exist");
        var path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path))
            throw TrainerUserException.Config($"model folder {folder} is incomplete: {ConfigFile} is missing");
        return Qwen3Config.Load(path);
    }

    /// <summary>
    /// Builds the model on `device` in `dtype` and copies every checkpoint tensor into it. With
    /// `nf4Base` (QLoRA) the decoder's projections are quantised one by one as they are read.
    /// </summary>
    public static Qwen3ForCausalLM Load(string folder, Device device, ScalarType dtype, LoraSettings? lora = null, bool nf4Base = false)
    {
        var config = LoadConfig(folder);
        var model = new Qwen3ForCausalLM(config, device, dtype, lora, nf4Base);
        try { CopyWeightsInto(model, folder); }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>Copies a folder's safetensors into the model's parameters (LoRA adapters excepted).</summary>
    public static void CopyWeightsInto(Qwen3ForCausalLM model, string folder)
    {
        SafetensorsSet set;
        try { set = SafetensorsSet.OpenFolder(folder); }
        catch (FileNotFoundException e) { throw TrainerUserException.Config($"model folder {folder} is incomplete: {e.Message}"); }
        catch (InvalidDataException e) { throw TrainerUserException.Config(e.Message); }
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (Lora.IsAdapterParameter(name)) continue;
            if (!set.Contains(name))
                throw TrainerUserException.Config($"model folder {folder}: tensor {name} is missing from the safetensors files");
            var entry = set.Entry(name);
            if (!entry.Shape.SequenceEqual(p.shape))
                throw TrainerUserException.Config($"model folder {folder}: tensor {name} has shape [{string.Join(", ", entry.Shape)}], config.json implies [{string.Join(", ", p.shape)}]");
            using var t = set.Read(name, p.dtype, p.device);
            p.copy_(t);
        }
        // NF4 bases: one weight at a time is read in its stored dtype, moved to the device and
        // quantised there, so the peak stays one full-precision layer above the packed model.
        foreach (var (module, layer) in model.named_modules())
        {
            if (layer is not QloraLinear q) continue;
            var name = module + ".weight";
            if (!set.Contains(name))
                throw TrainerUserException.Config($"model folder {folder}: tensor {name} is missing from the safetensors files");
            var entry = set.Entry(name);
            if (!entry.Shape.SequenceEqual(q.BaseWeight.Shape))
                throw TrainerUserException.Config($"model folder {folder}: tensor {name} has shape [{string.Join(", ", entry.Shape)}], config.json implies [{string.Join(", ", q.BaseWeight.Shape)}]");
            using var t = set.Read(name, null, q.BaseWeight.Device);
            q.LoadBase(t);
        }
    }

    /// <summary>Shard size of written models, as Hugging Face's save_pretrained default (5 GB).</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>
    /// Writes a full Hugging Face folder. LoRA layers are merged in. `sourceFolder` supplies the
    /// original config.json (unknown keys kept), tokenizer and generation config. Weights above
    /// maxShardBytes go into shards `model-0000i-of-0000n.safetensors` with an index, as
    /// save_pretrained writes them.
    /// </summary>
    public static void Save(Qwen3ForCausalLM model, string folder, string sourceFolder, long maxShardBytes = DefaultMaxShardBytes)
    {
        Directory.CreateDirectory(folder);
        var weights = Lora.MergedWeights(model);
        try
        {
            var dtype = weights[0].Tensor.dtype;
            static long Bytes(Tensor t) => t.numel() * t.ElementSize;
            var shards = new List<List<(string Name, Tensor Tensor)>> { new() };
            long used = 0;
            foreach (var w in weights)
            {
                if (used > 0 && used + Bytes(w.Tensor) > maxShardBytes) { shards.Add([]); used = 0; }
                shards[^1].Add(w);
                used += Bytes(w.Tensor);
            }
            if (shards.Count == 1)
                SafetensorsFile.Write(Path.Combine(folder, WeightsFile), weights);
            else
            {
                var map = new JsonObject();
                for (var i = 0; i < shards.Count; i++)
                {
                    var file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                    SafetensorsFile.Write(Path.Combine(folder, file), shards[i]);
                    foreach (var (name, _) in shards[i]) map[name] = file;
                }
                var index = new JsonObject
                {
                    ["metadata"] = new JsonObject { ["total_size"] = weights.Sum(w => Bytes(w.Tensor)) },
                    ["weight_map"] = map,
                };
                File.WriteAllText(Path.Combine(folder, WeightsFile + ".index.json"), index.ToJsonString(new() { WriteIndented = true }));
            }
            var sourceConfig = Path.Combine(sourceFolder, ConfigFile);
            var config = File.Exists(sourceConfig) ? JsonNode.Parse(File.ReadAllText(sourceConfig))!.AsObject() : new JsonObject();
            config["torch_dtype"] = dtype switch
            {
                ScalarType.Float32 => "float32",
                ScalarType.Float16 => "float16",
                _ => "bfloat16",
            };
            File.WriteAllText(Path.Combine(folder, ConfigFile), config.ToJsonString(new() { WriteIndented = true }));
        }
        finally
        {
            foreach (var (_, t) in weights) t.Dispose();
        }
        CopySideFiles(sourceFolder, folder);
    }

    /// <summary>Copies tokenizer files and generation_config.json (written when the source has none).</summary>
    public static void CopySideFiles(string sourceFolder, string folder)
    {
        foreach (var file in TokenizerFiles.Append(GenerationConfigFile))
        {
            var src = Path.Combine(sourceFolder, file);
            if (File.Exists(src) && Path.GetFullPath(src) != Path.GetFullPath(Path.Combine(folder, file)))
                File.Copy(src, Path.Combine(folder, file), overwrite: true);
        }
        var generation = Path.Combine(folder, GenerationConfigFile);
        if (!File.Exists(generation))
        {
            var config = LoadConfig(folder);
            File.WriteAllText(generation, new JsonObject
            {
                ["bos_token_id"] = config.BosTokenId,
                ["eos_token_id"] = config.EosTokenId,
                ["do_sample"] = false,
            }.ToJsonString(new() { WriteIndented = true }));
        }
    }
}
