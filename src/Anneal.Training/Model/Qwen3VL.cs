// Qwen3-VL dense (2B/4B/8B/32B), as Hugging Face transformers defines it (modeling_qwen3_vl.py), in
// one file read top to bottom: config → vision tower (patch embed, interpolated position embedding,
// 2-D rotary, per-image attention blocks, patch mergers) → 3-D positions and interleaved MRoPE →
// text decoder with deepstack injection → conditional generation head.
//
// What makes Qwen3-VL Qwen3-VL (compared with the Qwen3 text model, whose decoder layer it reuses):
//   - a ViT tower over 16×16×2 (time) patches, with a learned 48×48 position table bilinearly
//     interpolated to each image's patch grid, plus 2-D rotary embeddings (row | column);
//   - attention inside each image only (HF loops over images in its SDPA path; so do we);
//   - a 2×2 patch merger turning four neighbouring patches into one text-width token, and
//     "deepstack" mergers on intermediate tower blocks whose outputs are added to the hidden
//     states of the image tokens after the first text layers;
//   - 3-D (time, row, column) positions for the text decoder, interleaved over the rotary
//     frequencies as THWTHW…TTTT (mrope_section [24, 20, 20] on the released sizes).
//
// Module names equal the checkpoint keys (`model.visual.blocks.3.attn.qkv.weight`,
// `model.language_model.layers.0.self_attn.q_proj.weight`). Shape legend: B batch, T sequence,
// D text hidden, N patches of all images, C vision hidden, nh vision heads, vd vision head dim,
// M merged image tokens (N/4), P = 3·2·16·16 = 1536 values per patch.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Anneal.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

/// <summary>An image's patch grid: t frames (1 for images), h rows and w columns of 16-px patches.</summary>
public readonly record struct ImageGrid(int T, int H, int W)
{
    public int Patches => T * H * W;
    /// <summary>Text tokens the image becomes after the 2×2 merger.</summary>
    public int Tokens(int merge) => T * (H / merge) * (W / merge);
}

/// <summary>`vision_config` of a Qwen3-VL `config.json`.</summary>
public sealed record Qwen3VLVisionConfig
{
    [JsonPropertyName("depth")] public int Depth { get; init; } = 27;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 1152;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu_pytorch_tanh";
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 4304;
    [JsonPropertyName("num_heads")] public int NumHeads { get; init; } = 16;
    [JsonPropertyName("in_channels")] public int InChannels { get; init; } = 3;
    [JsonPropertyName("patch_size")] public int PatchSize { get; init; } = 16;
    [JsonPropertyName("spatial_merge_size")] public int SpatialMergeSize { get; init; } = 2;
    [JsonPropertyName("temporal_patch_size")] public int TemporalPatchSize { get; init; } = 2;
    [JsonPropertyName("out_hidden_size")] public int OutHiddenSize { get; init; } = 3584;
    [JsonPropertyName("num_position_embeddings")] public int NumPositionEmbeddings { get; init; } = 2304;
    [JsonPropertyName("deepstack_visual_indexes")] public int[] DeepstackVisualIndexes { get; init; } = [8, 16, 24];

    public int HeadDim => HiddenSize / NumHeads;
    /// <summary>Values per patch: channels × frames × patch².</summary>
    public int PatchValues => InChannels * TemporalPatchSize * PatchSize * PatchSize;
}

/// <summary>A Qwen3-VL `config.json`: text and vision parts plus the special token ids.</summary>
public sealed record Qwen3VLConfig
{
    public required Qwen3Config Text { get; init; }
    public required Qwen3VLVisionConfig Vision { get; init; }
    /// <summary>Rotary frequencies owned by (time, row, column); sums to head_dim / 2.</summary>
    public int[] MropeSection { get; init; } = [24, 20, 20];
    public int ImageTokenId { get; init; } = 151655;
    public int VideoTokenId { get; init; } = 151656;
    public int VisionStartTokenId { get; init; } = 151652;
    public int VisionEndTokenId { get; init; } = 151653;
    public bool TieWordEmbeddings { get; init; }

    static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowReadingFromString };

    /// <summary>True when a config.json describes a Qwen3-VL model (model_type "qwen3_vl").</summary>
    public static bool IsVisionConfig(string path)
    {
        try { return JsonNode.Parse(File.ReadAllText(path)) is JsonObject o && (string?)o["model_type"] is "qwen3_vl" or "qwen3_vl_moe"; }
        catch (JsonException) { return false; }
    }

    /// <summary>Reads `config.json` (RoPE in `rope_scaling` as 4.57 writes it, or `rope_parameters` as v5 does).</summary>
    public static Qwen3VLConfig Load(string path)
    {
        static TrainerUserException Bad(string path, string problem) => new(Anneal.Core.Contracts.ErrorCodes.UserConfigError, $"{path}: {problem}");
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw Bad(path, "not a JSON object"); }
        catch (JsonException e) { throw Bad(path, $"not a valid config.json ({e.Message})"); }
        var modelType = (string?)root["model_type"];
        if (modelType == "qwen3_vl_moe")
            throw Bad(path, "model_type \"qwen3_vl_moe\" (mixture of experts) is not supported; dense Qwen3-VL (\"qwen3_vl\") is");
        if (modelType != "qwen3_vl")
            throw Bad(path, $"model_type \"{modelType}\" is not a Qwen3-VL config (expected \"qwen3_vl\")");
        if (root["text_config"] is not JsonObject textNode) throw Bad(path, "text_config is missing");
        if (root["vision_config"] is not JsonObject visionNode) throw Bad(path, "vision_config is missing");

        Qwen3Config text;
        Qwen3VLVisionConfig vision;
        try
        {
            text = textNode.Deserialize<Qwen3Config>(Json)!;
            vision = visionNode.Deserialize<Qwen3VLVisionConfig>(Json)!;
        }
        catch (JsonException e) { throw Bad(path, $"text_config or vision_config is not valid ({e.Message})"); }
        var rope = textNode["rope_parameters"] as JsonObject ?? textNode["rope_scaling"] as JsonObject;
        if (rope?["rope_theta"] is JsonValue theta && theta.TryGetValue<double>(out var t)) text = text with { RopeTheta = t };
        int[] section = [24, 20, 20];
        if (rope?["mrope_section"] is JsonArray s)
            section = s.Select(x => (int)x!).ToArray();
        // Top-level values win (v5 keeps them there; 4.57 repeats them in text_config).
        var tie = root["tie_word_embeddings"] is JsonValue tv ? tv.GetValue<bool>() : text.TieWordEmbeddings;
        var dtype = (string?)root["torch_dtype"] ?? (string?)root["dtype"] ?? text.TorchDtype;
        text = text with { TieWordEmbeddings = tie, TorchDtype = dtype };
        var config = new Qwen3VLConfig
        {
            Text = text, Vision = vision, MropeSection = section, TieWordEmbeddings = tie,
            ImageTokenId = (int?)root["image_token_id"] ?? 151655,
            VideoTokenId = (int?)root["video_token_id"] ?? 151656,
            VisionStartTokenId = (int?)root["vision_start_token_id"] ?? 151652,
            VisionEndTokenId = (int?)root["vision_end_token_id"] ?? 151653,
        };
        config.Validate(path);
        return config;
    }

    public void Validate(string path)
    {
        Text.Validate(path + " (text_config)");
        var v = Vision;
        string? problem = null;
        if (MropeSection.Length != 3 || MropeSection.Sum() != Text.HeadDim / 2)
            problem = $"mrope_section [{string.Join(", ", MropeSection)}] must have three entries summing to head_dim/2 = {Text.HeadDim / 2}";
        else if (MropeSection[1] > MropeSection[0] || MropeSection[2] > MropeSection[0])
            problem = $"mrope_section [{string.Join(", ", MropeSection)}]: the interleaved layout needs the time section to be the largest";
        else if (v.HiddenAct != "gelu_pytorch_tanh")
            problem = $"vision_config.hidden_act \"{v.HiddenAct}\" is not supported (expected \"gelu_pytorch_tanh\")";
        else if (v.HiddenSize % v.NumHeads != 0 || v.HeadDim % 4 != 0)
            problem = $"vision_config.hidden_size {v.HiddenSize} / num_heads {v.NumHeads} must give a head size divisible by 4 (2-D rotary)";
        else if (v.OutHiddenSize != Text.HiddenSize)
            problem = $"vision_config.out_hidden_size {v.OutHiddenSize} must equal text_config.hidden_size {Text.HiddenSize}";
        else if ((int)Math.Round(Math.Sqrt(v.NumPositionEmbeddings)) is var side && side * side != v.NumPositionEmbeddings)
            problem = $"vision_config.num_position_embeddings {v.NumPositionEmbeddings} is not a square";
        else if (v.DeepstackVisualIndexes.Any(i => i < 0 || i >= v.Depth) || v.DeepstackVisualIndexes.Length > Text.NumHiddenLayers)
            problem = $"vision_config.deepstack_visual_indexes [{string.Join(", ", v.DeepstackVisualIndexes)}] must be tower blocks 0..{v.Depth - 1}, at most one per text layer";
        if (problem != null)
            throw new TrainerUserException(Anneal.Core.Contracts.ErrorCodes.UserConfigError, $"{path}: {problem}");
    }
}

// ───────────────────────────── vision tower ─────────────────────────────

/// <summary>nn.LayerNorm with weight and bias (keys `weight`, `bias`).</summary>
public sealed class VisionLayerNorm : nn.Module<Tensor, Tensor>
{
    readonly long size;
    readonly double eps;
    [ComponentName(Name = "weight")] readonly Parameter weight;
    [ComponentName(Name = "bias")] readonly Parameter bias;

    public VisionLayerNorm(long size, double eps, Device? device, ScalarType dtype) : base(nameof(VisionLayerNorm))
    {
        (this.size, this.eps) = (size, eps);
        weight = new Parameter(torch.ones(size, dtype: dtype, device: device));
        bias = new Parameter(torch.zeros(size, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => nn.functional.layer_norm(x, [size], weight, bias, eps);
}

/// <summary>
/// Conv3d(3, C, kernel = stride = (2, 16, 16)) over one patch at a time, i.e. a linear map of the
/// flattened (c, t, py, px) patch with the kernel viewed as (C, P). Keys `proj.weight` (C, 3, 2, 16, 16), `proj.bias`.
/// </summary>
public sealed class Qwen3VLPatchEmbed : nn.Module<Tensor, Tensor>
{
    sealed class Conv3dWeights : nn.Module
    {
        [ComponentName(Name = "weight")] public readonly Parameter Weight;
        [ComponentName(Name = "bias")] public readonly Parameter Bias;
        public Conv3dWeights(long[] shape, Device? device, ScalarType dtype) : base("Conv3d")
        {
            Weight = new Parameter(torch.zeros(shape, dtype: dtype, device: device));
            Bias = new Parameter(torch.zeros(shape[0], dtype: dtype, device: device));
            RegisterComponents();
        }
    }

    [ComponentName(Name = "proj")] readonly Conv3dWeights proj;

    public Qwen3VLPatchEmbed(Qwen3VLVisionConfig v, Device? device, ScalarType dtype) : base(nameof(Qwen3VLPatchEmbed))
    {
        proj = new Conv3dWeights([v.HiddenSize, v.InChannels, v.TemporalPatchSize, v.PatchSize, v.PatchSize], device, dtype);
        RegisterComponents();
    }

    /// <summary>(N, P) → (N, C).</summary>
    public override Tensor forward(Tensor patches)
    {
        using var scope = NewDisposeScope();
        var w = proj.Weight.view(proj.Weight.shape[0], -1);                                   // (C, P)
        return nn.functional.linear(patches.to(w.dtype), w, proj.Bias).MoveToOuterDisposeScope();
    }
}

/// <summary>Inputs shared by every tower block: 2-D rotary (N, vd) in float32 and each image's patch range.</summary>
public sealed record VisionInputs(Tensor Cos, Tensor Sin, IReadOnlyList<(long Start, long Length)> Images);

/// <summary>Bidirectional attention inside each image (frame), none across images.</summary>
public sealed class Qwen3VLVisionAttention : nn.Module<Tensor, VisionInputs, Tensor>
{
    readonly int heads, headDim;
    [ComponentName(Name = "qkv")] readonly Linear qkv;     // C → 3C, rows [q; k; v], each head-major
    [ComponentName(Name = "proj")] readonly Linear proj;   // C → C

    public Qwen3VLVisionAttention(Qwen3VLVisionConfig v, Device? device, ScalarType dtype) : base(nameof(Qwen3VLVisionAttention))
    {
        heads = v.NumHeads;
        headDim = v.HeadDim;
        qkv = nn.Linear(v.HiddenSize, 3L * v.HiddenSize, hasBias: true, device: device, dtype: dtype);
        proj = nn.Linear(v.HiddenSize, v.HiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Rotary in float32, cast back (apply_rotary_pos_emb_vision). x (N, nh, vd), cos/sin (N, vd).</summary>
    static Tensor Rope(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var f = x.to(ScalarType.Float32);
        var half = f.shape[^1] / 2;
        var rotated = torch.cat([-f.narrow(-1, half, half), f.narrow(-1, 0, half)], dim: -1);
        return (f * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>x (N, C) → (N, C).</summary>
    public override Tensor forward(Tensor x, VisionInputs a)
    {
        using var scope = NewDisposeScope();
        var n = x.shape[0];
        var qkvs = qkv.call(x).view(n, 3, heads, headDim).permute(1, 0, 2, 3);              // (3, N, nh, vd)
        var q = Rope(qkvs[0], a.Cos, a.Sin);
        var k = Rope(qkvs[1], a.Cos, a.Sin);
        var v = qkvs[2];
        var outputs = new List<Tensor>(a.Images.Count);
        foreach (var (start, length) in a.Images)
        {
            Tensor Head(Tensor t) => t.narrow(0, start, length).transpose(0, 1).unsqueeze(0);  // (1, nh, L, vd)
            var y = nn.functional.scaled_dot_product_attention(Head(q), Head(k), Head(v));    // non-causal, scale vd^-0.5
            outputs.Add(y.squeeze(0).transpose(0, 1).reshape(length, heads * headDim));      // (L, C)
        }
        return proj.call(torch.cat(outputs, dim: 0)).MoveToOuterDisposeScope();
    }
}

/// <summary>linear_fc2(gelu_tanh(linear_fc1(x))), with biases.</summary>
public sealed class Qwen3VLVisionMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "linear_fc1")] readonly Linear fc1;   // C → I
    [ComponentName(Name = "linear_fc2")] readonly Linear fc2;   // I → C

    public Qwen3VLVisionMlp(Qwen3VLVisionConfig v, Device? device, ScalarType dtype) : base(nameof(Qwen3VLVisionMlp))
    {
        fc1 = nn.Linear(v.HiddenSize, v.IntermediateSize, hasBias: true, device: device, dtype: dtype);
        fc2 = nn.Linear(v.IntermediateSize, v.HiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.gelu(fc1.call(x), TorchSharp.Modules.GELU.Approximate.tanh);
        return fc2.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm block with LayerNorms: x + attn(norm1(x)), then x + mlp(norm2(x)).</summary>
public sealed class Qwen3VLVisionBlock : nn.Module<Tensor, VisionInputs, Tensor>
{
    [ComponentName(Name = "norm1")] readonly VisionLayerNorm norm1;
    [ComponentName(Name = "norm2")] readonly VisionLayerNorm norm2;
    [ComponentName(Name = "attn")] readonly Qwen3VLVisionAttention attn;
    [ComponentName(Name = "mlp")] readonly Qwen3VLVisionMlp mlp;

    public Qwen3VLVisionBlock(Qwen3VLVisionConfig v, Device? device, ScalarType dtype) : base(nameof(Qwen3VLVisionBlock))
    {
        norm1 = new VisionLayerNorm(v.HiddenSize, 1e-6, device, dtype);
        norm2 = new VisionLayerNorm(v.HiddenSize, 1e-6, device, dtype);
        attn = new Qwen3VLVisionAttention(v, device, dtype);
        mlp = new Qwen3VLVisionMlp(v, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, VisionInputs a)
    {
        using var scope = NewDisposeScope();
        var h = x + attn.call(norm1.call(x), a);
        return (h + mlp.call(norm2.call(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Four neighbouring patches (consecutive rows, thanks to the block order) → one token of the text
/// width: LayerNorm, view (M, 4C), Linear, exact GELU, Linear. The deepstack mergers normalise after
/// the view (over 4C), the final merger before it (over C).
/// </summary>
public sealed class Qwen3VLPatchMerger : nn.Module<Tensor, Tensor>
{
    readonly long merged;
    readonly bool postShuffleNorm;
    [ComponentName(Name = "norm")] readonly VisionLayerNorm norm;
    [ComponentName(Name = "linear_fc1")] readonly Linear fc1;   // 4C → 4C
    [ComponentName(Name = "linear_fc2")] readonly Linear fc2;   // 4C → D

    public Qwen3VLPatchMerger(Qwen3VLVisionConfig v, bool postShuffleNorm, Device? device, ScalarType dtype) : base(nameof(Qwen3VLPatchMerger))
    {
        merged = (long)v.HiddenSize * v.SpatialMergeSize * v.SpatialMergeSize;
        this.postShuffleNorm = postShuffleNorm;
        norm = new VisionLayerNorm(postShuffleNorm ? merged : v.HiddenSize, 1e-6, device, dtype);
        fc1 = nn.Linear(merged, merged, hasBias: true, device: device, dtype: dtype);
        fc2 = nn.Linear(merged, v.OutHiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>(N, C) → (M, D).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = postShuffleNorm ? norm.call(x.view(-1, merged)) : norm.call(x).view(-1, merged);
        return fc2.call(nn.functional.gelu(fc1.call(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>What the tower returns: merged image tokens (M, D) and one (M, D) tensor per deepstack tap.</summary>
public sealed record ImageFeatures(Tensor Embeds, IReadOnlyList<Tensor> Deepstack) : IDisposable
{
    public void Dispose()
    {
        Embeds.Dispose();
        foreach (var t in Deepstack) t.Dispose();
    }
}

/// <summary>Qwen3VLVisionModel (the `model.visual.` keys).</summary>
public sealed class Qwen3VLVisionModel : nn.Module<Tensor, IReadOnlyList<ImageGrid>, ImageFeatures>
{
    readonly Qwen3VLVisionConfig config;
    readonly int gridSide;                                       // √num_position_embeddings (48)
    [ComponentName(Name = "patch_embed")] readonly Qwen3VLPatchEmbed patchEmbed;
    [ComponentName(Name = "pos_embed")] readonly Embedding posEmbed;                 // (side², C)
    [ComponentName(Name = "blocks")] readonly ModuleList<Qwen3VLVisionBlock> blocks;
    [ComponentName(Name = "merger")] readonly Qwen3VLPatchMerger merger;
    [ComponentName(Name = "deepstack_merger_list")] readonly ModuleList<Qwen3VLPatchMerger> deepstackMergers;

    public Qwen3VLVisionModel(Qwen3VLVisionConfig v, Device? device, ScalarType dtype) : base(nameof(Qwen3VLVisionModel))
    {
        config = v;
        gridSide = (int)Math.Round(Math.Sqrt(v.NumPositionEmbeddings));
        patchEmbed = new Qwen3VLPatchEmbed(v, device, dtype);
        posEmbed = nn.Embedding(v.NumPositionEmbeddings, v.HiddenSize, device: device, dtype: dtype);
        blocks = nn.ModuleList(Enumerable.Range(0, v.Depth).Select(_ => new Qwen3VLVisionBlock(v, device, dtype)).ToArray());
        merger = new Qwen3VLPatchMerger(v, postShuffleNorm: false, device, dtype);
        deepstackMergers = nn.ModuleList(v.DeepstackVisualIndexes.Select(_ => new Qwen3VLPatchMerger(v, postShuffleNorm: true, device, dtype)).ToArray());
        RegisterComponents();
    }

    /// <summary>
    /// Per image: the side×side position table sampled bilinearly at linspace(0, side-1, h) ×
    /// linspace(0, side-1, w) (corner weights computed in float32, then cast to the table's dtype;
    /// the four corner terms summed in order), repeated per frame, in merge-block order. → (N, C).
    /// </summary>
    Tensor PositionEmbeddings(IReadOnlyList<ImageGrid> grids, Device device)
    {
        using var scope = NewDisposeScope();
        var m = config.SpatialMergeSize;
        var weight = posEmbed.weight!;
        var parts = new List<Tensor>();
        foreach (var g in grids)
        {
            var (hIdx, wIdx) = (torch.linspace(0, gridSide - 1, g.H, dtype: ScalarType.Float32), torch.linspace(0, gridSide - 1, g.W, dtype: ScalarType.Float32));
            var (hFloor, wFloor) = (hIdx.to(ScalarType.Int64), wIdx.to(ScalarType.Int64));      // truncation, as .int()
            var (hCeil, wCeil) = ((hFloor + 1).clamp_max(gridSide - 1), (wFloor + 1).clamp_max(gridSide - 1));
            var (dh, dw) = (hIdx - hFloor, wIdx - wFloor);
            var (rowF, rowC) = ((hFloor * gridSide).unsqueeze(1), (hCeil * gridSide).unsqueeze(1));   // (h, 1)
            var (colF, colC) = (wFloor.unsqueeze(0), wCeil.unsqueeze(0));                             // (1, w)
            Tensor[] index = [rowF + colF, rowF + colC, rowC + colF, rowC + colC];
            Tensor[] weights =
            [
                (1 - dh).unsqueeze(1) * (1 - dw).unsqueeze(0), (1 - dh).unsqueeze(1) * dw.unsqueeze(0),
                dh.unsqueeze(1) * (1 - dw).unsqueeze(0), dh.unsqueeze(1) * dw.unsqueeze(0),
            ];
            Tensor? sum = null;
            for (var c = 0; c < 4; c++)
            {
                var term = weight.index_select(0, index[c].flatten().to(device)) * weights[c].flatten().to(weight.dtype).to(device).unsqueeze(1);
                sum = sum is null ? term : sum + term;                                                  // (h·w, C)
            }
            var blocked = sum!.repeat(g.T, 1).view(g.T, g.H / m, m, g.W / m, m, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, weight.shape[1]);
            parts.Add(blocked);
        }
        return torch.cat(parts, dim: 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// 2-D rotary for the tower: per patch (block order) the row and column index, each rotated by
    /// vd/4 frequencies θ = 1e4^(-2i/(vd/2)); emb = [row | col], then cat(emb, emb). → cos, sin (N, vd) float32.
    /// </summary>
    (Tensor Cos, Tensor Sin) RotaryCosSin(IReadOnlyList<ImageGrid> grids, Device device)
    {
        using var scope = NewDisposeScope();
        var m = config.SpatialMergeSize;
        var dim = config.HeadDim / 2;
        var invFreq = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / dim);   // (vd/4)
        var rows = new List<Tensor>();
        var cols = new List<Tensor>();
        foreach (var g in grids)
        {
            var r = torch.arange(g.H, dtype: ScalarType.Int64).unsqueeze(1).expand(g.H, g.W);
            var c = torch.arange(g.W, dtype: ScalarType.Int64).unsqueeze(0).expand(g.H, g.W);
            Tensor Blocked(Tensor t) => t.reshape(g.H / m, m, g.W / m, m).permute(0, 2, 1, 3).flatten().repeat(g.T);
            rows.Add(Blocked(r));
            cols.Add(Blocked(c));
        }
        var maxSide = grids.Max(g => Math.Max(g.H, g.W));
        var table = torch.outer(torch.arange(maxSide, dtype: ScalarType.Float32), invFreq);                          // (max, vd/4)
        var emb = torch.cat([table.index_select(0, torch.cat(rows)), table.index_select(0, torch.cat(cols))], dim: 1); // (N, vd/2)
        emb = torch.cat([emb, emb], dim: 1).to(device);                                                               // (N, vd)
        return (emb.cos().MoveToOuterDisposeScope(), emb.sin().MoveToOuterDisposeScope());
    }

    /// <summary>pixel patches (N, P) in the processor's order, grids per image → merged tokens and deepstack features.</summary>
    public override ImageFeatures forward(Tensor patches, IReadOnlyList<ImageGrid> grids)
    {
        using var scope = NewDisposeScope();
        var expected = grids.Sum(g => (long)g.Patches);
        if (patches.shape[0] != expected)
            throw new ArgumentException($"{patches.shape[0]} patches for grids that hold {expected}");
        var x = patchEmbed.call(patches) + PositionEmbeddings(grids, patches.device);                 // (N, C)
        var (cos, sin) = RotaryCosSin(grids, patches.device);
        var images = new List<(long, long)>();
        long start = 0;
        foreach (var g in grids)
            for (var f = 0; f < g.T; f++) { images.Add((start, (long)g.H * g.W)); start += (long)g.H * g.W; }
        var inputs = new VisionInputs(cos, sin, images);
        var deepstack = new List<Tensor>();
        for (var i = 0; i < blocks.Count; i++)
        {
            x = blocks[i].call(x, inputs);
            var tap = Array.IndexOf(config.DeepstackVisualIndexes, i);
            if (tap >= 0) deepstack.Add(deepstackMergers[tap].call(x).MoveToOuterDisposeScope());      // (M, D)
        }
        return new ImageFeatures(merger.call(x).MoveToOuterDisposeScope(), deepstack);
    }
}

// ───────────────────────────── 3-D positions and MRoPE ─────────────────────────────

/// <summary>Multimodal rotary positions (get_rope_index) and their interleaved cos/sin.</summary>
public static class MRope
{
    /// <summary>
    /// (time, row, column) position of every token of one sequence. Text runs count up on all three
    /// axes; an image's tokens (row-major over its merged gh×gw grid) sit at time p, row p+r,
    /// column p+c, and the next token continues at p + max(gh, gw). Images are taken from `grids`
    /// in order starting at `nextImage`, which is advanced. → (3, T) and the position after the
    /// last token minus T (the offset generation adds to plain text positions).
    /// </summary>
    public static (long[,] Positions, long Delta) Compute(ReadOnlySpan<int> ids, IReadOnlyList<ImageGrid> grids, ref int nextImage, int imageTokenId, int merge)
    {
        var positions = new long[3, ids.Length];
        long p = 0;
        var i = 0;
        while (i < ids.Length)
        {
            if (ids[i] != imageTokenId)
            {
                for (var a = 0; a < 3; a++) positions[a, i] = p;
                p++; i++;
                continue;
            }
            if (nextImage >= grids.Count)
                throw new ArgumentException($"image token at {i} but only {grids.Count} image grid(s)");
            var g = grids[nextImage++];
            int gh = g.H / merge, gw = g.W / merge;
            var count = g.T * gh * gw;
            if (i + count > ids.Length)
                throw new ArgumentException($"image {nextImage - 1} needs {count} image tokens from {i}, the sequence ends at {ids.Length}");
            for (var f = 0; f < g.T; f++)
                for (var r = 0; r < gh; r++)
                    for (var c = 0; c < gw; c++)
                    {
                        var at = i + (f * gh + r) * gw + c;
                        if (ids[at] != imageTokenId)
                            throw new ArgumentException($"image {nextImage - 1} needs {count} consecutive image tokens from {i}; token {at} is {ids[at]}");
                        (positions[0, at], positions[1, at], positions[2, at]) = (p + f, p + r, p + c);
                    }
            p += Math.Max(Math.Max(gh, gw), g.T);
            i += count;
        }
        return (positions, p - ids.Length);
    }

    /// <summary>
    /// Which axis (0 time, 1 row, 2 column) owns each of the hd/2 rotary frequencies: start from
    /// time, then frequencies 1, 4, … (section[1] of them) go to rows and 2, 5, … to columns.
    /// [24, 20, 20] gives THW×20 then TTTT.
    /// </summary>
    public static int[] FrequencyOwners(int[] section)
    {
        var owners = new int[section.Sum()];
        for (var k = 0; k < section[1]; k++) owners[1 + 3 * k] = 1;
        for (var k = 0; k < section[2]; k++) owners[2 + 3 * k] = 2;
        return owners;
    }

    /// <summary>positions (3, B, T) → cos, sin (B, T, hd): frequencies in float32, cast to dtype.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int headDim, double theta, int[] section, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var device = positions.device;
        var exponent = torch.arange(0, headDim, 2, dtype: ScalarType.Int64, device: device).to(ScalarType.Float32) / headDim;
        var invFreq = 1.0 / torch.pow(theta, exponent);                                          // (hd/2)
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;                     // (3, B, T, hd/2)
        var owners = torch.tensor(FrequencyOwners(section).Select(o => (long)o).ToArray(), device: device);
        var select = nn.functional.one_hot(owners, 3).t().to(ScalarType.Float32);                 // (3, hd/2), exact 0/1
        var mixed = (freqs * select.unsqueeze(1).unsqueeze(1)).sum([0L]);                           // (B, T, hd/2)
        var emb = torch.cat([mixed, mixed], dim: -1);                                              // (B, T, hd)
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }
}

// ───────────────────────────── text decoder ─────────────────────────────

/// <summary>Inputs of one multimodal forward: token ids, 3-D positions, and the images they refer to.</summary>
/// <param name="Ids">(B, T)</param>
/// <param name="Positions">(3, B, T)</param>
/// <param name="Mask">as in <see cref="AttentionInputs"/>: null for plain causal attention.</param>
/// <param name="Images">tower output for the images of the batch in token order, or null.</param>
public sealed record VisionLanguageInputs(Tensor Ids, Tensor Positions, Tensor? Mask, ImageFeatures? Images, KvCache? Cache = null);

/// <summary>Qwen3VLTextModel (`model.language_model.` keys): the Qwen3 decoder fed image features and deepstack additions.</summary>
public sealed class Qwen3VLTextModel : nn.Module<VisionLanguageInputs, Tensor>
{
    readonly Qwen3VLConfig config;
    [ComponentName(Name = "embed_tokens")] readonly Embedding embedTokens;        // (V, D)
    [ComponentName(Name = "layers")] readonly ModuleList<Qwen3DecoderLayer> layers;
    [ComponentName(Name = "norm")] readonly RmsNorm norm;

    public Embedding EmbedTokens => embedTokens;

    /// <summary>Activation checkpointing of each decoder layer (recompute in backward), when set.</summary>
    public Func<Qwen3DecoderLayer, Tensor, AttentionInputs, Tensor>? LayerRunner { get; set; }

    public Qwen3VLTextModel(Qwen3VLConfig c, Device? device, ScalarType dtype, LoraSettings? lora) : base(nameof(Qwen3VLTextModel))
    {
        config = c;
        var t = c.Text;
        embedTokens = nn.Embedding(t.VocabSize, t.HiddenSize, device: device, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, t.NumHiddenLayers).Select(i => new Qwen3DecoderLayer(t, i, device, dtype, lora)).ToArray());
        norm = new RmsNorm(t.HiddenSize, t.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>→ final hidden states (B, T, D).</summary>
    public override Tensor forward(VisionLanguageInputs x)
    {
        using var scope = NewDisposeScope();
        var h = embedTokens.call(x.Ids);                                                       // (B, T, D)
        long B = h.shape[0], T = h.shape[1], D = h.shape[2];
        Tensor? imageRows = null;                                                              // (M) rows of the (B·T, D) view
        if (x.Images is { } images)
        {
            // masked_scatter in row-major (batch, position) order: the i-th image token gets feature row i.
            imageRows = x.Ids.view(-1).eq(config.ImageTokenId).nonzero().view(-1);
            if (imageRows.shape[0] != images.Embeds.shape[0])
                throw new ArgumentException($"Image features and image tokens do not match: {imageRows.shape[0]} tokens, {images.Embeds.shape[0]} features");
            h = h.view(-1, D).index_copy(0, imageRows, images.Embeds.to(h.dtype)).view(B, T, D);
        }
        var (cos, sin) = MRope.CosSin(x.Positions, config.Text.HeadDim, config.Text.RopeTheta, config.MropeSection, h.dtype);
        var inputs = new AttentionInputs(cos, sin, x.Mask, x.Cache);
        for (var i = 0; i < layers.Count; i++)
        {
            h = LayerRunner is null ? layers[i].call(h, inputs) : LayerRunner(layers[i], h, inputs);
            // Deepstack: after text layer i, the i-th tap's features are added to the image tokens.
            if (imageRows is not null && i < x.Images!.Deepstack.Count)
                h = h.view(-1, D).index_add(0, imageRows, x.Images.Deepstack[i].to(h.dtype), 1).view(B, T, D);
        }
        return norm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>Qwen3VLModel (the `model.` prefix): vision tower and language model side by side.</summary>
public sealed class Qwen3VLModel : nn.Module
{
    [ComponentName(Name = "visual")] public readonly Qwen3VLVisionModel Visual;
    [ComponentName(Name = "language_model")] public readonly Qwen3VLTextModel LanguageModel;

    public Qwen3VLModel(Qwen3VLConfig c, Device? device, ScalarType dtype, LoraSettings? lora) : base(nameof(Qwen3VLModel))
    {
        Visual = new Qwen3VLVisionModel(c.Vision, device, dtype);
        LanguageModel = new Qwen3VLTextModel(c, device, dtype, lora);
        RegisterComponents();
    }
}

/// <summary>
/// Qwen3VLForConditionalGeneration: tower + decoder + output projection (tied to embed_tokens when
/// configured). LoRA, when given, targets the language model's projections only; the tower keeps
/// plain weights (frozen unless the caller opts in).
/// </summary>
public sealed class Qwen3VLForConditionalGeneration : nn.Module<VisionLanguageInputs, Tensor>
{
    public Qwen3VLConfig Config { get; }
    public LoraSettings? LoraSettings { get; }
    [ComponentName(Name = "model")] readonly Qwen3VLModel model;
    [ComponentName(Name = "lm_head")] readonly Linear? lmHead;                    // (V, D), absent when tied

    public const string VisualPrefix = "model.visual.";
    public const string MergerPrefix = "model.visual.merger.";

    public Qwen3VLForConditionalGeneration(Qwen3VLConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32, LoraSettings? lora = null)
        : base(nameof(Qwen3VLForConditionalGeneration))
    {
        Config = config;
        LoraSettings = lora;
        model = new Qwen3VLModel(config, device, dtype, lora);
        if (!config.TieWordEmbeddings)
            lmHead = nn.Linear(config.Text.HiddenSize, config.Text.VocabSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
        if (lora != null)
            foreach (var (name, p) in named_parameters())
                p.requires_grad = Lora.IsAdapterParameter(name);
    }

    public Qwen3VLVisionModel Visual => model.Visual;
    public Qwen3VLTextModel Decoder => model.LanguageModel;

    /// <summary>Output weight (V, D): lm_head, or the input embeddings when tied.</summary>
    public Tensor OutputWeight => lmHead?.weight ?? model.LanguageModel.EmbedTokens.weight!;

    /// <summary>Runs the tower on the batch's patches (N, P) → features for <see cref="VisionLanguageInputs"/>.</summary>
    public ImageFeatures ImageFeatures(Tensor patches, IReadOnlyList<ImageGrid> grids) => model.Visual.call(patches, grids);

    public Tensor Hidden(VisionLanguageInputs x) => model.LanguageModel.call(x);

    public Tensor Logits(Tensor hidden) => nn.functional.linear(hidden, OutputWeight);

    /// <summary>→ logits (B, T, V).</summary>
    public override Tensor forward(VisionLanguageInputs x)
    {
        using var scope = NewDisposeScope();
        return Logits(Hidden(x)).MoveToOuterDisposeScope();
    }

    /// <summary>Parameter names and shapes (HF keys), tied lm_head omitted as in the checkpoints.</summary>
    public IEnumerable<(string Name, long[] Shape)> ParameterShapes() =>
        named_parameters().Select(p => (p.name, p.parameter.shape));
}
