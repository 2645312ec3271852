// Qwen3 dense decoder, exactly as Hugging Face transformers defines it (modeling_qwen3.py), in one
// file read top to bottom: config → RmsNorm → rotary → attention → MLP → decoder layer → causal LM.
//
// What makes Qwen3 Qwen3 (compared with Llama / Qwen2):
//   - per-head RMSNorm on queries and keys (q_norm, k_norm over head_dim) before rotary embeddings;
//   - head_dim is its own config value (128 on every size), not hidden_size / num_attention_heads;
//   - grouped-query attention (num_key_value_heads < num_attention_heads), no biases by default;
//   - SwiGLU MLP, pre-norm residual blocks, RoPE with rope_theta = 1e6;
//   - tied input/output embeddings on the small sizes (0.6B, 1.7B, 4B): no lm_head.weight then.
//
// Module names equal the checkpoint keys (`model.layers.3.self_attn.q_proj.weight`), so loading is
// a key-for-key copy. Shape legend: B batch, T sequence, D hidden_size, H query heads,
// K key/value heads, hd head_dim, I intermediate_size, V vocab_size.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Anneal.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

/// <summary>The fields of a Qwen3 `config.json` the model uses (names as in the file).</summary>
public sealed record Qwen3Config
{
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 151936;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 4096;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 22016;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; } = 32;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; } = 32;
    [JsonPropertyName("num_key_value_heads")] public int NumKeyValueHeads { get; init; } = 32;
    [JsonPropertyName("head_dim")] public int HeadDim { get; init; } = 128;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 32768;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; init; } = 10000.0;
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; init; } = 1e-6;
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; init; }
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "silu";
    [JsonPropertyName("torch_dtype")] public string TorchDtype { get; init; } = "bfloat16";
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "qwen3";
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }
    /// <summary>Some checkpoints list several end tokens here; the first is kept.</summary>
    [JsonPropertyName("eos_token_id"), JsonConverter(typeof(FirstIdConverter))] public int? EosTokenId { get; init; }
    [JsonPropertyName("rope_scaling")] public JsonNode? RopeScaling { get; init; }
    /// <summary>Newer transformers versions write RoPE as {"rope_type": "default", "rope_theta": θ} here instead of rope_theta.</summary>
    [JsonPropertyName("rope_parameters")] public JsonNode? RopeParameters { get; init; }

    static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowReadingFromString };

    /// <summary>Reads `config.json`; a config the model cannot run exactly is a user error naming the key.</summary>
    public static Qwen3Config Load(string path)
    {
        Qwen3Config config;
        try { config = JsonSerializer.Deserialize<Qwen3Config>(File.ReadAllText(path), Json)!; }
        catch (JsonException e) { throw new TrainerUserException(Anneal.Core.Contracts.ErrorCodes.UserConfigError, $"{path}: not a valid config.json ({e.Message})"); }
        if (config.RopeParameters is JsonObject rope && rope["rope_theta"] is JsonValue theta && theta.TryGetValue<double>(out var t))
            config = config with { RopeTheta = t };
        config.Validate(path);
        return config;
    }

    static string? RopeType(JsonNode? node) =>
        node is JsonObject o && (o["rope_type"] ?? o["type"]) is JsonValue v && v.TryGetValue<string>(out var type) ? type : null;

    public void Validate(string path)
    {
        string? problem = null;
        // "qwen3_vl_text": the text_config of a Qwen3-VL checkpoint, the same decoder.
        if (ModelType is not ("qwen3" or "qwen3_vl_text"))
            problem = $"model_type \"{ModelType}\" is not supported (expected \"qwen3\")";
        else if (HiddenAct != "silu")
            problem = $"hidden_act \"{HiddenAct}\" is not supported (expected \"silu\")";
        else if (RopeScaling is JsonObject && RopeType(RopeScaling) != "default")
            problem = "rope_scaling is set; only plain RoPE (rope_scaling null or rope_type \"default\") is implemented";
        else if (RopeParameters is JsonObject && RopeType(RopeParameters) is not (null or "default"))
            problem = $"rope_parameters.rope_type \"{RopeType(RopeParameters)}\" is not supported; only plain RoPE (\"default\") is implemented";
        else if (NumAttentionHeads % NumKeyValueHeads != 0)
            problem = $"num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}";
        else if (HeadDim % 2 != 0)
            problem = $"head_dim {HeadDim} must be even for rotary embeddings";
        if (problem != null)
            throw new TrainerUserException(Anneal.Core.Contracts.ErrorCodes.UserConfigError, $"{path}: {problem}");
    }

    public ScalarType DType => TorchDtype switch
    {
        "float32" => ScalarType.Float32,
        "float16" => ScalarType.Float16,
        _ => ScalarType.BFloat16,
    };
}

/// <summary>Reads a token id given as a number or as a list of numbers (the first one).</summary>
sealed class FirstIdConverter : JsonConverter<int?>
{
    public override int? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null) return null;
        if (reader.TokenType == JsonTokenType.Number) return reader.GetInt32();
        var list = JsonSerializer.Deserialize<int[]>(ref reader, options);
        return list is { Length: > 0 } ? list[0] : null;
    }

    public override void Write(Utf8JsonWriter writer, int? value, JsonSerializerOptions options)
    {
        if (value is { } v) writer.WriteNumberValue(v); else writer.WriteNullValue();
    }
}

/// <summary>RMSNorm as Qwen3 computes it: in float32, then cast back and scaled by weight.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly double eps;
    readonly Parameter weight; // (n)

    public RmsNorm(long size, double eps, Device? device, ScalarType dtype) : base(nameof(RmsNorm))
    {
        this.eps = eps;
        weight = new Parameter(torch.ones(size, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var variance = h.pow(2).mean([-1L], keepdim: true);
        h = h * torch.rsqrt(variance + eps);
        return (weight * h.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>Rotary position embeddings (RoPE), default variant: inv_freq = θ^(-2i/hd).</summary>
public static class Rotary
{
    /// <summary>cos, sin for the given positions: (B, T) → two (B, T, hd), in float32 cast to dtype.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int headDim, double theta, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var exponent = torch.arange(0, headDim, 2, dtype: ScalarType.Int64, device: positions.device).to(ScalarType.Float32) / headDim;
        var invFreq = 1.0 / torch.pow(theta, exponent);                                  // (hd/2)
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;             // (B, T, hd/2)
        var emb = torch.cat([freqs, freqs], dim: -1);                                    // (B, T, hd)
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin, x: (B, heads, T, hd), cos/sin: (B, T, hd).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = torch.cat([-x2, x1], dim: -1);
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }
}

/// <summary>Inputs shared by every layer of one forward pass.</summary>
/// <param name="Cos">(B, T, hd)</param>
/// <param name="Sin">(B, T, hd)</param>
/// <param name="Mask">null: plain causal attention; else a bool (B, 1, T, S) mask, true = may attend
/// (block-diagonal causal for packed sequences, or causal over a KV cache).</param>
/// <param name="Cache">per-layer key/value cache for generation, or null.</param>
public sealed record AttentionInputs(Tensor Cos, Tensor Sin, Tensor? Mask, KvCache? Cache);

/// <summary>Keys and values of the tokens seen so far, per layer: (B, K, S, hd) each.</summary>
public sealed class KvCache : IDisposable
{
    public readonly Tensor?[] Keys, Values;
    public KvCache(int layers) { Keys = new Tensor?[layers]; Values = new Tensor?[layers]; }
    public long Length => Keys[0]?.shape[2] ?? 0;
    public void Dispose()
    {
        foreach (var t in Keys) t?.Dispose();
        foreach (var t in Values) t?.Dispose();
    }
}

public sealed class Qwen3Attention : nn.Module<Tensor, AttentionInputs, Tensor>
{
    readonly int layerIndex, heads, kvHeads, headDim;
    [ComponentName(Name = "q_proj")] readonly nn.Module<Tensor, Tensor> qProj;  // D → H·hd
    [ComponentName(Name = "k_proj")] readonly nn.Module<Tensor, Tensor> kProj;  // D → K·hd
    [ComponentName(Name = "v_proj")] readonly nn.Module<Tensor, Tensor> vProj;  // D → K·hd
    [ComponentName(Name = "o_proj")] readonly nn.Module<Tensor, Tensor> oProj;  // H·hd → D
    [ComponentName(Name = "q_norm")] readonly RmsNorm qNorm;                    // over hd, per head
    [ComponentName(Name = "k_norm")] readonly RmsNorm kNorm;

    public Qwen3Attention(Qwen3Config c, int layerIndex, Device? device, ScalarType dtype, LoraSettings? lora, bool nf4Base = false) : base(nameof(Qwen3Attention))
    {
        this.layerIndex = layerIndex;
        heads = c.NumAttentionHeads;
        kvHeads = c.NumKeyValueHeads;
        headDim = c.HeadDim;
        qProj = Lora.Linear("q_proj", c.HiddenSize, heads * headDim, c.AttentionBias, device, dtype, lora, nf4Base);
        kProj = Lora.Linear("k_proj", c.HiddenSize, kvHeads * headDim, c.AttentionBias, device, dtype, lora, nf4Base);
        vProj = Lora.Linear("v_proj", c.HiddenSize, kvHeads * headDim, c.AttentionBias, device, dtype, lora, nf4Base);
        oProj = Lora.Linear("o_proj", heads * headDim, c.HiddenSize, c.AttentionBias, device, dtype, lora, nf4Base);
        qNorm = new RmsNorm(headDim, c.RmsNormEps, device, dtype);
        kNorm = new RmsNorm(headDim, c.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionInputs a)
    {
        using var scope = NewDisposeScope();
        long B = x.shape[0], T = x.shape[1];
        var q = qNorm.call(qProj.call(x).view(B, T, heads, headDim)).transpose(1, 2);     // (B, H, T, hd)
        var k = kNorm.call(kProj.call(x).view(B, T, kvHeads, headDim)).transpose(1, 2);   // (B, K, T, hd)
        var v = vProj.call(x).view(B, T, kvHeads, headDim).transpose(1, 2);               // (B, K, T, hd)
        q = Rotary.Apply(q, a.Cos, a.Sin);
        k = Rotary.Apply(k, a.Cos, a.Sin);

        if (a.Cache is { } cache)
        {
            // Generation: append this step's keys/values. The cache owns its tensors (outside every
            // dispose scope) and frees the previous ones.
            var pk = cache.Keys[layerIndex];
            var pv = cache.Values[layerIndex];
            k = pk is null ? k : torch.cat([pk, k], dim: 2);                                   // (B, K, S, hd)
            v = pv is null ? v : torch.cat([pv, v], dim: 2);
            pk?.Dispose(); pv?.Dispose();
            cache.Keys[layerIndex] = k.detach().DetachFromDisposeScope();
            cache.Values[layerIndex] = v.detach().DetachFromDisposeScope();
        }

        // Grouped-query attention: each key/value head serves H/K consecutive query heads.
        if (kvHeads != heads)
        {
            k = k.repeat_interleave(heads / kvHeads, dim: 1);                                   // (B, H, S, hd)
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }
        // SDPA scales by 1/sqrt(hd), as Qwen3 does. Packed batches pass a block-diagonal mask.
        var y = a.Mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q, k, v, a.Mask);                      // (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, heads * headDim);                                  // (B, T, H·hd)
        return oProj.call(y).MoveToOuterDisposeScope();                                       // (B, T, D)
    }
}

/// <summary>SwiGLU: down(silu(gate(x)) · up(x)).</summary>
public sealed class Qwen3Mlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")] readonly nn.Module<Tensor, Tensor> gateProj;  // D → I
    [ComponentName(Name = "up_proj")] readonly nn.Module<Tensor, Tensor> upProj;      // D → I
    [ComponentName(Name = "down_proj")] readonly nn.Module<Tensor, Tensor> downProj;  // I → D

    public Qwen3Mlp(Qwen3Config c, Device? device, ScalarType dtype, LoraSettings? lora, bool nf4Base = false) : base(nameof(Qwen3Mlp))
    {
        gateProj = Lora.Linear("gate_proj", c.HiddenSize, c.IntermediateSize, false, device, dtype, lora, nf4Base);
        upProj = Lora.Linear("up_proj", c.HiddenSize, c.IntermediateSize, false, device, dtype, lora, nf4Base);
        downProj = Lora.Linear("down_proj", c.IntermediateSize, c.HiddenSize, false, device, dtype, lora, nf4Base);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.silu(gateProj.call(x)) * upProj.call(x);                    // (B, T, I)
        return downProj.call(h).MoveToOuterDisposeScope();                                  // (B, T, D)
    }
}

/// <summary>Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).</summary>
public sealed class Qwen3DecoderLayer : nn.Module<Tensor, AttentionInputs, Tensor>
{
    [ComponentName(Name = "self_attn")] readonly Qwen3Attention selfAttn;
    [ComponentName(Name = "mlp")] readonly Qwen3Mlp mlp;
    [ComponentName(Name = "input_layernorm")] readonly RmsNorm inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] readonly RmsNorm postAttentionLayernorm;

    public Qwen3DecoderLayer(Qwen3Config c, int index, Device? device, ScalarType dtype, LoraSettings? lora, bool nf4Base = false) : base(nameof(Qwen3DecoderLayer))
    {
        selfAttn = new Qwen3Attention(c, index, device, dtype, lora, nf4Base);
        mlp = new Qwen3Mlp(c, device, dtype, lora, nf4Base);
        inputLayernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device, dtype);
        postAttentionLayernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionInputs a)
    {
        using var scope = NewDisposeScope();
        var h = x + selfAttn.call(inputLayernorm.call(x), a);
        return (h + mlp.call(postAttentionLayernorm.call(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>Embeddings, decoder layers and the final norm (the `model.` prefix of checkpoint keys).</summary>
public sealed class Qwen3Model : nn.Module<Tensor, Tensor, Tensor?, KvCache?, Tensor>
{
    readonly Qwen3Config config;
    [ComponentName(Name = "embed_tokens")] readonly Embedding embedTokens;        // (V, D)
    [ComponentName(Name = "layers")] readonly ModuleList<Qwen3DecoderLayer> layers;
    [ComponentName(Name = "norm")] readonly RmsNorm norm;

    public Embedding EmbedTokens => embedTokens;

    /// <summary>Activation checkpointing of each decoder layer (recompute in backward), when set.</summary>
    public Func<Qwen3DecoderLayer, Tensor, AttentionInputs, Tensor>? LayerRunner { get; set; }

    public Qwen3Model(Qwen3Config c, Device? device, ScalarType dtype, LoraSettings? lora, bool nf4Base = false) : base(nameof(Qwen3Model))
    {
        config = c;
        embedTokens = nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(i => new Qwen3DecoderLayer(c, i, device, dtype, lora, nf4Base)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>ids (B, T), positions (B, T) → final hidden states (B, T, D).</summary>
    public override Tensor forward(Tensor ids, Tensor positions, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = embedTokens.call(ids);                                                       // (B, T, D)
        var (cos, sin) = Rotary.CosSin(positions, config.HeadDim, config.RopeTheta, h.dtype);
        var inputs = new AttentionInputs(cos, sin, mask, cache);
        foreach (var layer in layers)
            h = LayerRunner is null ? layer.call(h, inputs) : LayerRunner(layer, h, inputs);
        return norm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>Qwen3ForCausalLM: the model plus the output projection (tied to embed_tokens when configured).</summary>
public sealed class Qwen3ForCausalLM : nn.Module<Tensor, Tensor, Tensor?, Tensor>
{
    public Qwen3Config Config { get; }
    public LoraSettings? LoraSettings { get; }
    /// <summary>QLoRA: the decoder's projections hold their frozen weights in NF4.</summary>
    public bool Nf4Base { get; }
    [ComponentName(Name = "model")] readonly Qwen3Model model;
    [ComponentName(Name = "lm_head")] readonly Linear? lmHead;                    // (V, D), absent when tied

    /// <param name="device">where parameters are allocated; `torch.META` builds shapes only.</param>
    /// <param name="lora">when set, the targeted projections become LoRA layers with frozen bases.</param>
    /// <param name="nf4Base">QLoRA: every decoder projection keeps its frozen base in NF4 (Model/Qlora.cs).</param>
    public Qwen3ForCausalLM(Qwen3Config config, Device? device = null, ScalarType dtype = ScalarType.Float32, LoraSettings? lora = null, bool nf4Base = false)
        : base(nameof(Qwen3ForCausalLM))
    {
        Config = config;
        LoraSettings = lora;
        Nf4Base = nf4Base;
        model = new Qwen3Model(config, device, dtype, lora, nf4Base);
        if (!config.TieWordEmbeddings)
            lmHead = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
        if (lora != null)
            foreach (var (name, p) in named_parameters())
                p.requires_grad = Lora.IsAdapterParameter(name);
    }

    /// <summary>The decoder stack (`model.` keys), e.g. to set activation checkpointing.</summary>
    public Qwen3Model Decoder => model;

    /// <summary>Output weight (V, D): lm_head, or the input embeddings when tied.</summary>
    public Tensor OutputWeight => lmHead?.weight ?? model.EmbedTokens.weight!;

    /// <summary>ids (B, T), positions (B, T), optional bool mask (B, 1, T, T) → hidden (B, T, D).</summary>
    public Tensor Hidden(Tensor ids, Tensor positions, Tensor? mask, KvCache? cache = null) =>
        model.call(ids, positions, mask, cache);

    /// <summary>hidden (…, D) → logits (…, V) in the model's dtype.</summary>
    public Tensor Logits(Tensor hidden) => nn.functional.linear(hidden, OutputWeight);

    /// <summary>ids (B, T), positions (B, T), optional mask → logits (B, T, V).</summary>
    public override Tensor forward(Tensor ids, Tensor positions, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        return Logits(Hidden(ids, positions, mask)).MoveToOuterDisposeScope();
    }

    /// <summary>Parameter names and shapes (HF keys), tied lm_head omitted as in the checkpoints.</summary>
    public IEnumerable<(string Name, long[] Shape)> ParameterShapes() =>
        named_parameters().Select(p => (p.name, p.parameter.shape));
}
