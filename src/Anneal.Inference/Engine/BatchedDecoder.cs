// One forward pass of Qwen3 over several sequences at once, each at its own position in its own
// KV cache slot, each row with its own LoRA adapter (or none). It runs the loaded
// Qwen3ForCausalLM's own modules and weights (same norms, rotary and projections as Qwen3.cs) and
// differs only in where keys/values live (SlotKvCache) and in the per-row adapter term, so a
// single greedy request gives the same tokens as Generation.Greedy.
// Shape legend: B rows, T new tokens per row, S attended length, D hidden, H/K heads, hd head_dim.
using Anneal.Training.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

/// <summary>A row of a forward pass: its cache slot, tokens already cached, and adapter.</summary>
public readonly record struct BatchRow(int Slot, int Cached, LoraAdapter? Adapter);

public sealed class BatchedDecoder
{
    static readonly string[] Projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    sealed record Layer(RmsNorm InputNorm, RmsNorm PostNorm, RmsNorm QNorm, RmsNorm KNorm, Dictionary<string, (Tensor W, Tensor? Bias)> Proj);

    readonly Qwen3ForCausalLM _model;
    readonly Qwen3Config _c;
    readonly Layer[] _layers;
    readonly RmsNorm _norm;
    readonly Embedding _embed;

    public BatchedDecoder(Qwen3ForCausalLM model)
    {
        _model = model;
        _c = model.Config;
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        RmsNorm Norm(string name) => (RmsNorm)modules[name];
        _layers = Enumerable.Range(0, _c.NumHiddenLayers).Select(i =>
        {
            var p = $"model.layers.{i}.";
            static string Owner(string proj) => proj is "gate_proj" or "up_proj" or "down_proj" ? "mlp" : "self_attn";
            var proj = Projections.ToDictionary(n => n, n =>
            {
                var key = $"{p}{Owner(n)}.{n}";
                return (parameters[key + ".weight"], parameters.GetValueOrDefault(key + ".bias"));
            });
            return new Layer(Norm(p + "input_layernorm"), Norm(p + "post_attention_layernorm"),
                Norm(p + "self_attn.q_norm"), Norm(p + "self_attn.k_norm"), proj);
        }).ToArray();
        _norm = Norm("model.norm");
        _embed = model.Decoder.EmbedTokens;
    }

    public Qwen3Config Config => _c;
    public Device Device => _model.OutputWeight.device;
    public ScalarType DType => _model.OutputWeight.dtype;

    /// <summary>
    /// Runs `tokens` (B rows of T tokens each) through the model, writing their keys/values into the
    /// rows' slots at positions Cached..Cached+T-1, and returns the last position's logits (B, V).
    /// </summary>
    public Tensor Forward(long[] tokens, int T, IReadOnlyList<BatchRow> rows, SlotKvCache cache)
    {
        using var scope = NewDisposeScope();
        var B = rows.Count;
        var dev = Device;
        var L = cache.MaxLength;
        var ids = torch.tensor(tokens, dtype: ScalarType.Int64, device: dev).view(B, T);
        var positions = new long[B * T];
        var write = new long[B * T];
        for (var b = 0; b < B; b++)
            for (var t = 0; t < T; t++)
            {
                positions[b * T + t] = rows[b].Cached + t;
                write[b * T + t] = (long)rows[b].Slot * L + rows[b].Cached + t;
            }
        var S = rows.Max(r => r.Cached) + T;
        // A lone prompt from position 0 attends causally to itself only: plain causal SDPA, as
        // Generation.Greedy's first pass. Otherwise read each row's prefix back from its slot.
        var fresh = B == 1 && rows[0].Cached == 0;
        Tensor? read = null, mask = null;
        if (!fresh)
        {
            var readIdx = new long[B * S];
            var allowed = new bool[B * T * S];
            for (var b = 0; b < B; b++)
            {
                var len = rows[b].Cached + T;
                for (var s = 0; s < S; s++)
                {
                    readIdx[b * S + s] = (long)rows[b].Slot * L + Math.Min(s, len - 1);
                    for (var t = 0; t < T; t++)
                        allowed[(b * T + t) * S + s] = s <= rows[b].Cached + t;
                }
            }
            read = torch.tensor(readIdx, dtype: ScalarType.Int64, device: dev);
            mask = torch.tensor(allowed, device: dev).view(B, 1, T, S);
        }
        var writeIdx = torch.tensor(write, dtype: ScalarType.Int64, device: dev);
        var pos = torch.tensor(positions, dtype: ScalarType.Int64, device: dev).view(B, T);

        var groups = AdapterGroups(rows, dev);
        int H = _c.NumAttentionHeads, K = _c.NumKeyValueHeads, hd = _c.HeadDim;
        using var _ = no_grad();
        var h = _embed.call(ids);                                                             // (B, T, D)
        var (cos, sin) = Rotary.CosSin(pos, hd, _c.RopeTheta, h.dtype);
        for (var l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            var x = layer.InputNorm.call(h);
            var q = layer.QNorm.call(Project(layer, l, "q_proj", x, groups).view(B, T, H, hd)).transpose(1, 2);   // (B, H, T, hd)
            var k = layer.KNorm.call(Project(layer, l, "k_proj", x, groups).view(B, T, K, hd)).transpose(1, 2);   // (B, K, T, hd)
            var v = Project(layer, l, "v_proj", x, groups).view(B, T, K, hd).transpose(1, 2);
            q = Rotary.Apply(q, cos, sin);
            k = Rotary.Apply(k, cos, sin);
            cache.Keys[l].index_copy_(0, writeIdx, k.transpose(1, 2).reshape(B * T, K, hd));
            cache.Values[l].index_copy_(0, writeIdx, v.transpose(1, 2).reshape(B * T, K, hd));
            if (read is not null)
            {
                k = cache.Keys[l].index_select(0, read).view(B, S, K, hd).transpose(1, 2);   // (B, K, S, hd)
                v = cache.Values[l].index_select(0, read).view(B, S, K, hd).transpose(1, 2);
            }
            if (K != H)
            {
                k = k.repeat_interleave(H / K, dim: 1);                                       // (B, H, S, hd)
                v = v.repeat_interleave(H / K, dim: 1);
            }
            var y = mask is null
                ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
                : nn.functional.scaled_dot_product_attention(q, k, v, mask);                 // (B, H, T, hd)
            y = y.transpose(1, 2).reshape(B, T, H * hd);
            h = h + Project(layer, l, "o_proj", y, groups);
            x = layer.PostNorm.call(h);
            var gated = nn.functional.silu(Project(layer, l, "gate_proj", x, groups)) * Project(layer, l, "up_proj", x, groups);
            h = h + Project(layer, l, "down_proj", gated, groups);
        }
        h = _norm.call(h.narrow(1, T - 1, 1)).squeeze(1);                                     // (B, D)
        return _model.Logits(h).MoveToOuterDisposeScope();                                    // (B, V)
    }

    /// <summary>Rows grouped by adapter: (adapter, row indices or null when every row shares it).</summary>
    static List<(LoraAdapter Adapter, Tensor? Rows)> AdapterGroups(IReadOnlyList<BatchRow> rows, Device dev)
    {
        var groups = new List<(LoraAdapter, Tensor?)>();
        foreach (var g in rows.Select((r, i) => (r.Adapter, i)).Where(x => x.Adapter is not null).GroupBy(x => x.Adapter!))
        {
            var idx = g.Select(x => (long)x.i).ToArray();
            groups.Add((g.Key, idx.Length == rows.Count ? null : torch.tensor(idx, dtype: ScalarType.Int64, device: dev)));
        }
        return groups;
    }

    /// <summary>x (B, T, in) → W·x + b, plus (α/r)·B·A·x for the rows of each adapter targeting this projection.</summary>
    static Tensor Project(Layer layer, int index, string name, Tensor x, List<(LoraAdapter Adapter, Tensor? Rows)> groups)
    {
        var (w, bias) = layer.Proj[name];
        var y = nn.functional.linear(x, w, bias);
        foreach (var (adapter, rows) in groups)
        {
            if (adapter.Get(index, name) is not { } ab) continue;
            if (rows is null)
                y = y + nn.functional.linear(nn.functional.linear(x, ab.A), ab.B) * adapter.Scaling;
            else
            {
                var delta = nn.functional.linear(nn.functional.linear(x.index_select(0, rows), ab.A), ab.B) * adapter.Scaling;
                y = y.index_add(0, rows, delta, 1);
            }
        }
        return y;
    }
}
