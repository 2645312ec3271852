// One forward pass of Qwen3 over several sequences at once, each at its own position in its own
// KV cache slot, each row with its own LoRA adapter (or none). It runs the loaded
// Qwen3ForCausalLM's own modules and weights (same norms, rotary and projections as Qwen3.cs) and
// differs only in where keys/values live (SlotKvCache), in grouping the query heads of each
// key/value head instead of repeating keys/values, and in the per-row adapter term, so a
// single greedy request gives the same tokens as Generation.Greedy. A model loaded on an NF4 base
// (QLoRA) runs its projections through their QloraLinear modules (dequantised as in training).
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

    sealed record Layer(RmsNorm InputNorm, RmsNorm PostNorm, RmsNorm QNorm, RmsNorm KNorm, Dictionary<string, Func<Tensor, Tensor>> Proj);

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
                if (modules[key] is QloraLinear nf4) return (Func<Tensor, Tensor>)nf4.call;   // W0 in NF4, no adapters of its own
                var (w, bias) = (parameters[key + ".weight"], parameters.GetValueOrDefault(key + ".bias"));
                return x => nn.functional.linear(x, w, bias);
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
    /// Runs each row's new tokens (prompts of different lengths, or one token each when decoding)
    /// through the model, writing their keys/values into the rows' slots at positions
    /// Cached..Cached+len-1, and returns the logits of each row's last new token (B, V). Shorter
    /// rows are padded at the end: pads sit after the row's real tokens, so causal masking keeps
    /// them out of every real token's attention, and their cache rows are overwritten later.
    /// </summary>
    public Tensor Forward(IReadOnlyList<long[]> tokens, IReadOnlyList<BatchRow> rows, SlotKvCache cache)
    {
        using var scope = NewDisposeScope();
        var B = rows.Count;
        var T = tokens.Max(t => t.Length);
        var dev = Device;
        var L = cache.MaxLength;
        int H = _c.NumAttentionHeads, K = _c.NumKeyValueHeads, hd = _c.HeadDim, G = H / K;
        var flat = new long[B * T];
        var positions = new long[B * T];
        var write = new long[B * K * T];
        var last = new long[B];
        for (var b = 0; b < B; b++)
        {
            last[b] = b * T + tokens[b].Length - 1;
            for (var t = 0; t < T; t++)
            {
                flat[b * T + t] = t < tokens[b].Length ? tokens[b][t] : 0;
                positions[b * T + t] = rows[b].Cached + t;
                for (var kh = 0; kh < K; kh++)   // row (slot, kh, position) of the cache's (slots·K·L, hd) view
                    write[(b * K + kh) * T + t] = ((long)rows[b].Slot * K + kh) * L + Math.Min(rows[b].Cached + t, L - 1);
            }
        }
        var ids = torch.tensor(flat, dtype: ScalarType.Int64, device: dev).view(B, T);
        var S = rows.Max(r => r.Cached) + T;
        // A lone prompt from position 0 attends causally to itself only: plain causal SDPA, as
        // Generation.Greedy's first pass. Otherwise every row attends to its slot's prefix in the
        // cache, masked to its own length: a view of the cache when the rows sit in consecutive
        // slots (the usual case, SlotKvCache hands out the lowest free slot), else a copy.
        var fresh = B == 1 && rows[0].Cached == 0;
        var consecutive = rows.Select((r, b) => r.Slot == rows[0].Slot + b).All(x => x);
        Tensor? mask = null, slotIdx = null;
        if (!fresh)
        {
            var allowed = new bool[B * T * S];
            for (var b = 0; b < B; b++)
                for (var t = 0; t < T; t++)
                    for (var s = 0; s <= rows[b].Cached + t && s < S; s++)
                        allowed[(b * T + t) * S + s] = true;
            // Grouped-query attention without copying keys/values H/K times: the G = H/K query heads
            // of one key/value head become G·T query rows, (g, t) at g·T + t, each with t's mask row.
            mask = torch.tensor(allowed, device: dev).view(B, 1, T, S).repeat(1, 1, G, 1);   // (B, 1, G·T, S)
            if (!consecutive) slotIdx = torch.tensor(rows.Select(r => (long)r.Slot).ToArray(), dtype: ScalarType.Int64, device: dev);
        }
        Tensor Prefix(Tensor layerCache) => slotIdx is null
            ? layerCache.narrow(0, rows[0].Slot, B).narrow(2, 0, S)                              // (B, K, S, hd), a view
            : layerCache.narrow(2, 0, S).index_select(0, slotIdx);
        var writeIdx = torch.tensor(write, dtype: ScalarType.Int64, device: dev);
        var pos = torch.tensor(positions, dtype: ScalarType.Int64, device: dev).view(B, T);

        var groups = AdapterGroups(rows, dev);
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
            cache.Keys[l].view(-1, hd).index_copy_(0, writeIdx, k.reshape(B * K * T, hd));
            cache.Values[l].view(-1, hd).index_copy_(0, writeIdx, v.reshape(B * K * T, hd));
            Tensor y;
            if (mask is null)
            {
                if (K != H)
                {
                    k = k.repeat_interleave(G, dim: 1);                                       // (B, H, T, hd)
                    v = v.repeat_interleave(G, dim: 1);
                }
                y = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);      // (B, H, T, hd)
            }
            else
            {
                y = nn.functional.scaled_dot_product_attention(q.reshape(B, K, G * T, hd), Prefix(cache.Keys[l]), Prefix(cache.Values[l]), mask)
                    .reshape(B, H, T, hd);                                                    // from (B, K, G·T, hd)
            }
            y = y.transpose(1, 2).reshape(B, T, H * hd);
            h = h + Project(layer, l, "o_proj", y, groups);
            x = layer.PostNorm.call(h);
            var gated = nn.functional.silu(Project(layer, l, "gate_proj", x, groups)) * Project(layer, l, "up_proj", x, groups);
            h = h + Project(layer, l, "down_proj", gated, groups);
        }
        var lastIdx = torch.tensor(last, dtype: ScalarType.Int64, device: dev);
        h = _norm.call(h.reshape(B * T, -1).index_select(0, lastIdx));                        // (B, D)
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
        var y = layer.Proj[name](x);
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
