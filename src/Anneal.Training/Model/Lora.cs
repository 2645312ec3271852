// LoRA (Hu et al. 2021) as PEFT implements it for nn.Linear:
//   y = W0·x + b + (α/r)·B·A·dropout(x)
// W0 (out, in) frozen; A = lora_A.weight (r, in), Kaiming-uniform initialised; B = lora_B.weight
// (out, r), zeros, so training starts from the base model exactly. Adapters are saved in PEFT's
// layout: adapter_config.json + adapter_model.safetensors with keys
// `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, loadable by peft.PeftModel.
using System.Text.Json.Nodes;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

public sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    public readonly double Scaling;        // α / r
    readonly double dropout;
    [ComponentName(Name = "weight")] readonly Parameter weight;   // W0 (out, in), frozen
    [ComponentName(Name = "bias")] readonly Parameter? bias;      // (out) or absent, frozen
    [ComponentName(Name = "lora_A")] readonly Linear loraA;      // (r, in)
    [ComponentName(Name = "lora_B")] readonly Linear loraB;      // (out, r)

    public LoraLinear(long inFeatures, long outFeatures, bool hasBias, LoraSettings s, Device? device, ScalarType dtype) : base(nameof(LoraLinear))
    {
        Scaling = s.Alpha / s.R;
        dropout = s.Dropout;
        // The frozen base is created like nn.Linear's (it is overwritten when a checkpoint loads).
        using (var init = nn.Linear(inFeatures, outFeatures, hasBias, device: device, dtype: dtype))
        {
            weight = new Parameter(init.weight.detach().clone(), requires_grad: false);
            if (hasBias) bias = new Parameter(init.bias!.detach().clone(), requires_grad: false);
        }
        loraA = nn.Linear(inFeatures, s.R, hasBias: false, device: device, dtype: dtype);   // Kaiming-uniform (a = √5), as PEFT
        loraB = nn.Linear(s.R, outFeatures, hasBias: false, device: device, dtype: dtype);
        using (no_grad()) nn.init.zeros_(loraB.weight);
        RegisterComponents();
    }

    public Tensor BaseWeight => weight;
    public Tensor A => loraA.weight;
    public Tensor B => loraB.weight;

    /// <summary>x (…, in) → (…, out).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.linear(x, weight, bias);
        var d = training && dropout > 0 ? nn.functional.dropout(x, dropout, training: true) : x;
        y = y + loraB.call(loraA.call(d)) * Scaling;
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>W0 + (α/r)·B·A, in W0's dtype (computed in float32).</summary>
    public Tensor MergedWeight()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var delta = B.to(ScalarType.Float32).matmul(A.to(ScalarType.Float32)) * Scaling;    // (out, in)
        return (weight.to(ScalarType.Float32) + delta).to(weight.dtype).MoveToOuterDisposeScope();
    }
}

public static class Lora
{
    public const string AdapterConfigFile = "adapter_config.json";
    public const string AdapterWeightsFile = "adapter_model.safetensors";
    const string PeftPrefix = "base_model.model.";

    /// <summary>
    /// A projection: LoRA when `lora` targets this module name, else a plain nn.Linear; with
    /// `nf4Base` (QLoRA) always an NF4 base, with adapters when targeted.
    /// </summary>
    public static nn.Module<Tensor, Tensor> Linear(string name, long inFeatures, long outFeatures, bool hasBias, Device? device, ScalarType dtype, LoraSettings? lora, bool nf4Base = false)
    {
        var targeted = lora != null && lora.Targets.Contains(name);
        if (nf4Base) return new QloraLinear(inFeatures, outFeatures, hasBias, targeted ? lora : null, device, dtype);
        return targeted
            ? new LoraLinear(inFeatures, outFeatures, hasBias, lora!, device, dtype)
            : nn.Linear(inFeatures, outFeatures, hasBias, device: device, dtype: dtype);
    }

    public static bool IsAdapterParameter(string name) => name.Contains(".lora_A.") || name.Contains(".lora_B.");

    /// <summary>The adapter parameters with PEFT's key names (`base_model.model.` + our name).</summary>
    public static IEnumerable<(string Name, Tensor Tensor)> AdapterTensors(Qwen3ForCausalLM model) =>
        model.named_parameters().Where(p => IsAdapterParameter(p.name)).Select(p => (PeftPrefix + p.name, (Tensor)p.parameter));

    /// <summary>Writes adapter_config.json and adapter_model.safetensors (PEFT layout).</summary>
    public static void SaveAdapter(Qwen3ForCausalLM model, string folder, string baseModel)
    {
        var s = model.LoraSettings ?? throw new InvalidOperationException("the model has no LoRA adapters");
        Directory.CreateDirectory(folder);
        var config = new JsonObject
        {
            ["base_model_name_or_path"] = baseModel,
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = s.R,
            ["lora_alpha"] = s.Alpha,
            ["lora_dropout"] = s.Dropout,
            ["target_modules"] = new JsonArray(s.Targets.Select(t => (JsonNode)t).ToArray()),
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["modules_to_save"] = null,
            ["use_rslora"] = false,
            ["use_dora"] = false,
        };
        File.WriteAllText(Path.Combine(folder, AdapterConfigFile), config.ToJsonString(new() { WriteIndented = true }));
        SafetensorsFile.Write(Path.Combine(folder, AdapterWeightsFile), AdapterTensors(model));
    }

    /// <summary>Copies adapter weights saved by <see cref="SaveAdapter"/> into the model.</summary>
    public static void LoadAdapter(Qwen3ForCausalLM model, string folder)
    {
        var set = SafetensorsSet.OpenFolder(folder, AdapterWeightsFile);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters().Where(p => IsAdapterParameter(p.name)).ToList())
        {
            if (!set.Contains(PeftPrefix + name))
                throw new InvalidDataException($"{folder}/{AdapterWeightsFile}: adapter tensor {PeftPrefix + name} is missing");
            using var t = set.Read(PeftPrefix + name, p.dtype, p.device);
            p.copy_(t);
        }
    }

    /// <summary>
    /// The model's weights with every LoRA layer folded in (W0 + (α/r)·B·A), under plain Qwen3
    /// names, i.e. what a full model folder holds. Plain parameters are returned as views (no
    /// copy); merged weights are computed on the model's device and moved to host memory, so a
    /// save needs no second copy of the model on the GPU. NF4 bases (QLoRA) are dequantised into
    /// the model's dtype. The caller disposes the handles.
    /// </summary>
    public static List<(string Name, Tensor Tensor)> MergedWeights(Qwen3ForCausalLM model)
    {
        var loraLayers = model.named_modules().Where(m => m.module is LoraLinear).ToDictionary(m => m.name, m => (LoraLinear)m.module);
        var result = new List<(string, Tensor)>();
        using var _ = no_grad();
        foreach (var (name, module) in model.named_modules())
            if (module is QloraLinear q)
                result.Add((name + ".weight", ToHost(q.MergedWeight())));
        foreach (var (name, p) in model.named_parameters())
        {
            if (IsAdapterParameter(name)) continue;
            var owner = name[..name.LastIndexOf('.')];
            if (name.EndsWith(".weight") && loraLayers.TryGetValue(owner, out var layer))
                result.Add((name, ToHost(layer.MergedWeight())));
            else
                result.Add((name, p.detach()));
        }
        return result;
    }

    static Tensor ToHost(Tensor merged)
    {
        if (merged.device.type == DeviceType.CPU) return merged;
        var host = merged.to(torch.CPU);
        merged.Dispose();
        return host;
    }
}
