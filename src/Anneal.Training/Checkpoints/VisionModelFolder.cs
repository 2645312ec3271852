// Hugging Face Qwen3-VL folders: load one (config.json with text_config/vision_config, safetensors
// single or sharded) into a Qwen3VLForConditionalGeneration, and write one transformers loads with
// Qwen3VLForConditionalGeneration.from_pretrained: the same keys (`model.visual.*`,
// `model.language_model.*`, `lm_head.weight` when untied), LoRA merged in, the processor files copied.
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Checkpoints;

public static class VisionModelFolder
{
    public const string PreprocessorConfigFile = "preprocessor_config.json";

    /// <summary>Processor files a Qwen3-VL snapshot carries besides the tokenizer.</summary>
    public static readonly string[] ProcessorFiles = [PreprocessorConfigFile, "video_preprocessor_config.json", "chat_template.json"];

    /// <summary>True when the folder's config.json is a Qwen3-VL one.</summary>
    public static bool IsVisionFolder(string folder) =>
        File.Exists(Path.Combine(folder, ModelFolder.ConfigFile)) && Qwen3VLConfig.IsVisionConfig(Path.Combine(folder, ModelFolder.ConfigFile));

    public static Qwen3VLConfig LoadConfig(string folder)
    {
        if (!Directory.Exists(folder))
            throw TrainerUserException.Config($"model folder {folder} does not exist");
        var path = Path.Combine(folder, ModelFolder.ConfigFile);
        if (!File.Exists(path))
            throw TrainerUserException.Config($"model folder {folder} is incomplete: {ModelFolder.ConfigFile} is missing");
        return Qwen3VLConfig.Load(path);
    }

    /// <summary>Builds the model on `device` in `dtype` and copies every checkpoint tensor into it.</summary>
    public static Qwen3VLForConditionalGeneration Load(string folder, Device device, ScalarType dtype, LoraSettings? lora = null)
    {
        var model = new Qwen3VLForConditionalGeneration(LoadConfig(folder), device, dtype, lora);
        try { CopyWeightsInto(model, folder); }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>Copies a folder's safetensors into the model's parameters (LoRA adapters excepted).</summary>
    public static void CopyWeightsInto(nn.Module model, string folder)
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
    }

    /// <summary>
    /// The weights under checkpoint names with every LoRA layer folded in (W0 + (α/r)·B·A, moved to
    /// host memory); plain parameters as views. The caller disposes the handles.
    /// </summary>
    public static List<(string Name, Tensor Tensor)> MergedWeights(nn.Module model)
    {
        var loraLayers = model.named_modules().Where(m => m.module is LoraLinear).ToDictionary(m => m.name, m => (LoraLinear)m.module);
        var result = new List<(string, Tensor)>();
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (Lora.IsAdapterParameter(name)) continue;
            var owner = name[..name.LastIndexOf('.')];
            if (name.EndsWith(".weight") && loraLayers.TryGetValue(owner, out var layer))
            {
                using var merged = layer.MergedWeight();
                result.Add((name, merged.to(torch.CPU)));
            }
            else
                result.Add((name, p.detach()));
        }
        return result;
    }

    /// <summary>
    /// Writes a full folder: weights (sharded above maxShardBytes, with an index, as save_pretrained
    /// does), the source config.json with torch_dtype updated, tokenizer, processor and generation files.
    /// </summary>
    public static void Save(Qwen3VLForConditionalGeneration model, string folder, string sourceFolder, long maxShardBytes = ModelFolder.DefaultMaxShardBytes)
    {
        Directory.CreateDirectory(folder);
        var weights = MergedWeights(model);
        try
        {
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
                SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), weights);
            else
            {
                var map = new JsonObject();
                for (var i = 0; i < shards.Count; i++)
                {
                    var file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                    SafetensorsFile.Write(Path.Combine(folder, file), shards[i]);
                    foreach (var (name, _) in shards[i]) map[name] = file;
                }
                File.WriteAllText(Path.Combine(folder, ModelFolder.WeightsFile + ".index.json"), new JsonObject
                {
                    ["metadata"] = new JsonObject { ["total_size"] = weights.Sum(w => Bytes(w.Tensor)) },
                    ["weight_map"] = map,
                }.ToJsonString(new() { WriteIndented = true }));
            }
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(sourceFolder, ModelFolder.ConfigFile)))!.AsObject();
            config["torch_dtype"] = weights[0].Tensor.dtype switch
            {
                ScalarType.Float32 => "float32",
                ScalarType.Float16 => "float16",
                _ => "bfloat16",
            };
            File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), config.ToJsonString(new() { WriteIndented = true }));
        }
        finally
        {
            foreach (var (_, t) in weights) t.Dispose();
        }
        CopySideFiles(model.Config, sourceFolder, folder);
    }

    /// <summary>
    /// Writes the language model's LoRA adapters in PEFT's layout (adapter_config.json,
    /// adapter_model.safetensors, keys `base_model.model.` + ours), loadable by peft.PeftModel.
    /// </summary>
    public static void SaveAdapter(Qwen3VLForConditionalGeneration model, string folder, string baseModel)
    {
        var s = model.LoraSettings ?? throw new InvalidOperationException("the model has no LoRA adapters");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, Lora.AdapterConfigFile), new JsonObject
        {
            ["base_model_name_or_path"] = baseModel,
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = s.R,
            ["lora_alpha"] = s.Alpha,
            ["lora_dropout"] = s.Dropout,
            // Module names scoped to the language model, so PEFT leaves the tower's Linear layers alone.
            ["target_modules"] = $"model\\.language_model\\.layers\\.\\d+\\..*\\.({string.Join("|", s.Targets)})$",
            ["bias"] = "none",
            ["inference_mode"] = true,
        }.ToJsonString(new() { WriteIndented = true }));
        SafetensorsFile.Write(Path.Combine(folder, Lora.AdapterWeightsFile),
            model.named_parameters().Where(p => Lora.IsAdapterParameter(p.name)).Select(p => ("base_model.model." + p.name, (Tensor)p.parameter)));
    }

    /// <summary>Tokenizer, processor and generation files (generation_config.json written when the source has none).</summary>
    public static void CopySideFiles(Qwen3VLConfig config, string sourceFolder, string folder)
    {
        foreach (var file in ProcessorFiles)
        {
            var src = Path.Combine(sourceFolder, file);
            if (File.Exists(src) && Path.GetFullPath(src) != Path.GetFullPath(Path.Combine(folder, file)))
                File.Copy(src, Path.Combine(folder, file), overwrite: true);
        }
        var generation = Path.Combine(folder, ModelFolder.GenerationConfigFile);
        if (!File.Exists(generation) && !File.Exists(Path.Combine(sourceFolder, ModelFolder.GenerationConfigFile)))
            File.WriteAllText(generation, new JsonObject
            {
                ["bos_token_id"] = config.Text.BosTokenId,
                ["eos_token_id"] = config.Text.EosTokenId,
                ["do_sample"] = false,
            }.ToJsonString(new() { WriteIndented = true }));
        ModelFolder.CopySideFiles(sourceFolder, folder);
    }
}
