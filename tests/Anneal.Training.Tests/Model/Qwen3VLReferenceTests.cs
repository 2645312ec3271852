// Parity of the Qwen3-VL forward pass with a naive float64 implementation written here from the
// reference definition (modeling_qwen3_vl.py, summarised in QWEN3VL.md §2–3), sharing no code with
// the model: patch embedding as a matrix product, the position table sampled bilinearly per patch
// at linspace(0, side-1, n) coordinates, row/column rotary angles, softmax attention restricted to
// each image, the two mergers, positions from the get_rope_index rule, MRoPE frequencies assigned
// to (time, row, column) by index (i % 3 == 1 and i < 3·section[1] → row, i % 3 == 2 and
// i < 3·section[2] → column, else time), deepstack added after the first text layers. Two images
// of different grids in one sequence, so per-image attention, interpolation to two grids and the
// position jumps are all exercised. The model under test runs in float32.
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Model;

public class Qwen3VLReferenceTests(ITestOutputHelper output)
{
    static Tensor Rms(Tensor x, Tensor w, double eps) => x / (x.pow(2).mean([-1L], keepdim: true) + eps).sqrt() * w;

    static Tensor LayerNorm(Tensor x, Tensor w, Tensor b)
    {
        var mean = x.mean([-1L], keepdim: true);
        var variance = (x - mean).pow(2).mean([-1L], keepdim: true);
        return (x - mean) / (variance + 1e-6).sqrt() * w + b;
    }

    static Tensor GeluTanh(Tensor x) => 0.5 * x * (1 + ((x + 0.044715 * x.pow(3)) * Math.Sqrt(2 / Math.PI)).tanh());
    static Tensor GeluExact(Tensor x) => 0.5 * x * (1 + (x / Math.Sqrt(2)).erf());

    /// <summary>Rotates x (L, n) by per-row angles (L, n/2) applied to the two halves.</summary>
    static Tensor Rotate(Tensor x, Tensor angles)
    {
        var half = x.shape[1] / 2;
        var (x1, x2) = (x[.., ..(int)half], x[.., (int)half..]);
        var (cos, sin) = (angles.cos(), angles.sin());
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], 1);
    }

    static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? blocked)
    {
        var scores = q.matmul(k.t()) / Math.Sqrt(q.shape[1]);
        if (blocked is not null) scores = scores.masked_fill(blocked, double.NegativeInfinity);
        return scores.softmax(-1).matmul(v);
    }

    /// <summary>The tower for one image (grid h × w, t = 1): returns merged tokens and deepstack outputs.</summary>
    static (Tensor Merged, List<Tensor> Deepstack) ReferenceTower(Qwen3VLVisionConfig c, Func<string, Tensor> W, Tensor pixels, int h, int w)
    {
        var side = (int)Math.Sqrt(c.NumPositionEmbeddings);
        var n = h * w;
        // Patch order: 2×2 blocks row-major, inside each block row-major.
        var rows = new int[n];
        var cols = new int[n];
        var i = 0;
        for (var br = 0; br < h / 2; br++)
            for (var bc = 0; bc < w / 2; bc++)
                for (var ir = 0; ir < 2; ir++)
                    for (var ic = 0; ic < 2; ic++)
                    { rows[i] = br * 2 + ir; cols[i] = bc * 2 + ic; i++; }

        var x = pixels.matmul(W("model.visual.patch_embed.proj.weight").view(c.HiddenSize, -1).t()) + W("model.visual.patch_embed.proj.bias");
        var table = W("model.visual.pos_embed.weight");
        var pos = torch.zeros(n, c.HiddenSize, dtype: ScalarType.Float64);
        double Coord(int k, int count) => count == 1 ? 0 : (double)k * (side - 1) / (count - 1);
        for (var p = 0; p < n; p++)
        {
            double y = Coord(rows[p], h), xx = Coord(cols[p], w);
            int y0 = (int)y, x0 = (int)xx, y1 = Math.Min(y0 + 1, side - 1), x1 = Math.Min(x0 + 1, side - 1);
            double dy = y - y0, dx = xx - x0;
            pos[p] = table[y0 * side + x0] * ((1 - dy) * (1 - dx)) + table[y0 * side + x1] * ((1 - dy) * dx)
                     + table[y1 * side + x0] * (dy * (1 - dx)) + table[y1 * side + x1] * (dy * dx);
        }
        x = x + pos;

        var vd = c.HeadDim;
        var quarter = vd / 4;
        var angles = torch.zeros(n, vd / 2, dtype: ScalarType.Float64);
        for (var p = 0; p < n; p++)
            for (var f = 0; f < quarter; f++)
            {
                var freq = Math.Pow(10000, -2.0 * f / (vd / 2));
                angles[p, f] = rows[p] * freq;
                angles[p, quarter + f] = cols[p] * freq;
            }

        var deepstack = new List<Tensor>();
        for (var b = 0; b < c.Depth; b++)
        {
            var p = $"model.visual.blocks.{b}.";
            var hN = LayerNorm(x, W(p + "norm1.weight"), W(p + "norm1.bias"));
            var qkv = hN.matmul(W(p + "attn.qkv.weight").t()) + W(p + "attn.qkv.bias");
            var heads = new List<Tensor>();
            for (var head = 0; head < c.NumHeads; head++)
            {
                Tensor Part(int which) => qkv[.., (which * c.HiddenSize + head * vd)..(which * c.HiddenSize + (head + 1) * vd)];
                heads.Add(Attention(Rotate(Part(0), angles), Rotate(Part(1), angles), Part(2), null));
            }
            x = x + torch.cat(heads, 1).matmul(W(p + "attn.proj.weight").t()) + W(p + "attn.proj.bias");
            hN = LayerNorm(x, W(p + "norm2.weight"), W(p + "norm2.bias"));
            var m = GeluTanh(hN.matmul(W(p + "mlp.linear_fc1.weight").t()) + W(p + "mlp.linear_fc1.bias"));
            x = x + m.matmul(W(p + "mlp.linear_fc2.weight").t()) + W(p + "mlp.linear_fc2.bias");
            var tap = Array.IndexOf(c.DeepstackVisualIndexes, b);
            if (tap >= 0) deepstack.Add(Merger($"model.visual.deepstack_merger_list.{tap}.", x, post: true));
        }
        return (Merger("model.visual.merger.", x, post: false), deepstack);

        Tensor Merger(string p, Tensor x, bool post)
        {
            var grouped = post
                ? LayerNorm(x.reshape(-1, 4 * c.HiddenSize), W(p + "norm.weight"), W(p + "norm.bias"))
                : LayerNorm(x, W(p + "norm.weight"), W(p + "norm.bias")).reshape(-1, 4 * c.HiddenSize);
            var hidden = GeluExact(grouped.matmul(W(p + "linear_fc1.weight").t()) + W(p + "linear_fc1.bias"));
            return hidden.matmul(W(p + "linear_fc2.weight").t()) + W(p + "linear_fc2.bias");
        }
    }

    static Tensor ReferenceLogits(Qwen3VLConfig config, Dictionary<string, Tensor> weights, int[] ids, Tensor pixels, (int H, int W)[] grids)
    {
        Tensor W(string name) => weights[name].to(ScalarType.Float64);
        var c = config.Text;
        var T = ids.Length;

        // Tower per image; features in image order.
        var merged = new List<Tensor>();
        var deep = new List<List<Tensor>>();
        var offset = 0;
        foreach (var (h, w) in grids)
        {
            var (m, d) = ReferenceTower(config.Vision, W, pixels[offset..(offset + h * w)].to(ScalarType.Float64), h, w);
            merged.Add(m);
            deep.Add(d);
            offset += h * w;
        }
        var features = torch.cat(merged, 0);
        var deepstack = Enumerable.Range(0, config.Vision.DeepstackVisualIndexes.Length).Select(k => torch.cat(deep.Select(d => d[k]).ToArray(), 0)).ToList();

        // Positions: text counts up; an image of merged gh × gw sits at (p, p + r, p + c), then p += max(gh, gw).
        var positions = new long[3, T];
        long next = 0;
        var image = 0;
        for (var t = 0; t < T;)
        {
            if (ids[t] != config.ImageTokenId) { positions[0, t] = positions[1, t] = positions[2, t] = next++; t++; continue; }
            var (gh, gw) = (grids[image].H / 2, grids[image].W / 2);
            image++;
            for (var r = 0; r < gh; r++)
                for (var col = 0; col < gw; col++, t++)
                    (positions[0, t], positions[1, t], positions[2, t]) = (next, next + r, next + col);
            next += Math.Max(gh, gw);
        }
        var angles = torch.zeros(T, c.HeadDim / 2, dtype: ScalarType.Float64);
        var sec = config.MropeSection;
        for (var t = 0; t < T; t++)
            for (var i = 0; i < c.HeadDim / 2; i++)
            {
                var axis = i % 3 == 1 && i < 3 * sec[1] ? 1 : i % 3 == 2 && i < 3 * sec[2] ? 2 : 0;
                angles[t, i] = positions[axis, t] * Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
            }

        var x = W("model.language_model.embed_tokens.weight").index_select(0, torch.tensor(ids.Select(i => (long)i).ToArray()));
        var imageRows = Enumerable.Range(0, T).Where(t => ids[t] == config.ImageTokenId).Select(t => (long)t).ToArray();
        for (var r = 0; r < imageRows.Length; r++) x[imageRows[r]] = features[r];
        var causal = torch.ones(T, T, dtype: ScalarType.Bool).triu(1);
        for (var l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = $"model.language_model.layers.{l}.";
            var h = Rms(x, W(p + "input_layernorm.weight"), c.RmsNormEps);
            var q = h.matmul(W(p + "self_attn.q_proj.weight").t());
            var k = h.matmul(W(p + "self_attn.k_proj.weight").t());
            var v = h.matmul(W(p + "self_attn.v_proj.weight").t());
            var heads = new List<Tensor>();
            for (var head = 0; head < c.NumAttentionHeads; head++)
            {
                var kv = head * c.NumKeyValueHeads / c.NumAttentionHeads;
                var qh = Rotate(Rms(q[.., (head * c.HeadDim)..((head + 1) * c.HeadDim)], W(p + "self_attn.q_norm.weight"), c.RmsNormEps), angles);
                var kh = Rotate(Rms(k[.., (kv * c.HeadDim)..((kv + 1) * c.HeadDim)], W(p + "self_attn.k_norm.weight"), c.RmsNormEps), angles);
                heads.Add(Attention(qh, kh, v[.., (kv * c.HeadDim)..((kv + 1) * c.HeadDim)], causal));
            }
            x = x + torch.cat(heads, 1).matmul(W(p + "self_attn.o_proj.weight").t());
            h = Rms(x, W(p + "post_attention_layernorm.weight"), c.RmsNormEps);
            var gate = h.matmul(W(p + "mlp.gate_proj.weight").t());
            var up = h.matmul(W(p + "mlp.up_proj.weight").t());
            x = x + (gate * gate.sigmoid() * up).matmul(W(p + "mlp.down_proj.weight").t());
            if (l < deepstack.Count)
                for (var r = 0; r < imageRows.Length; r++) x[imageRows[r]] = x[imageRows[r]] + deepstack[l][r];
        }
        x = Rms(x, W("model.language_model.norm.weight"), c.RmsNormEps);
        return x.matmul(W(config.TieWordEmbeddings ? "model.language_model.embed_tokens.weight" : "lm_head.weight").t());
    }

    [Fact]
    public void Two_images_of_different_grids_match_a_naive_float64_reference()
    {
        var dir = TinyFixture.VisionModelDir;
        using var model = VisionModelFolder.Load(dir, CPU, ScalarType.Float32);
        var config = model.Config;
        // Non-trivial norm weights and biases, so a misplaced norm cannot hide behind 1 and 0.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters().Where(p => p.name.Contains("norm")))
                p.copy_((name.EndsWith(".bias") ? 0 : 1) + 0.3 * torch.sin(torch.arange(p.numel(), dtype: ScalarType.Float32) * (name.Length % 7 + 1)).view(p.shape));
        var weights = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach());

        (int H, int W)[] grids = [(4, 6), (8, 4)];                   // 6 and 8 merged tokens
        int img = config.ImageTokenId, vs = config.VisionStartTokenId, ve = config.VisionEndTokenId;
        var ids = new List<int> { 3, 17, 250, vs };
        ids.AddRange(Enumerable.Repeat(img, 6));
        ids.AddRange([ve, 9, 44, vs]);
        ids.AddRange(Enumerable.Repeat(img, 8));
        ids.AddRange([ve, 101, 7, 300, 12]);
        var idArray = ids.ToArray();

        var generator = new Random(7);
        var patches = grids.Sum(g => g.H * g.W);
        var pixels = torch.tensor(Enumerable.Range(0, patches * config.Vision.PatchValues).Select(_ => (float)(generator.NextDouble() * 2 - 1)).ToArray())
            .view(patches, config.Vision.PatchValues);

        model.eval();
        using var _ = no_grad();
        var imageGrids = grids.Select(g => new ImageGrid(1, g.H, g.W)).ToList();
        var next = 0;
        var (pos, delta) = MRope.Compute(idArray, imageGrids, ref next, img, 2);
        Assert.Equal(2, next);
        Assert.Equal(-(6 - 3) - (8 - 4), delta);                     // each image advances max(gh, gw) positions for gh·gw tokens
        var positions = torch.tensor(pos).unsqueeze(1);             // (3, 1, T)
        using var features = model.ImageFeatures(pixels, imageGrids);
        var ours = model.call(new VisionLanguageInputs(torch.tensor(idArray.Select(i => (long)i).ToArray()).view(1, -1), positions, null, features))[0];
        var reference = ReferenceLogits(config, weights, idArray, pixels, grids);
        var diff = TestTensors.MaxDiff(ours, reference);
        var scale = reference.abs().max().item<double>();
        output.WriteLine($"max |ours - reference| = {diff:E3} (logits up to {scale:F3})");
        Assert.True(diff < 1e-4 * Math.Max(1, scale), $"maxdiff {diff}");

        // The images really reach the logits: other pixels change the text after them.
        using var other = model.ImageFeatures(pixels.flip(0), imageGrids);
        var changed = model.call(new VisionLanguageInputs(torch.tensor(idArray.Select(i => (long)i).ToArray()).view(1, -1), positions, null, other))[0];
        Assert.True(TestTensors.MaxDiff(changed[^1], ours[^1]) > 1e-4);
    }

    [Fact]
    public void Positions_follow_the_worked_example()
    {
        // 3 text tokens, an image with grid [1, 4, 6] (2 × 3 merged), 2 text tokens (QWEN3VL.md §3).
        const int I = 99;
        int[] ids = [1, 2, 3, I, I, I, I, I, I, 4, 5];
        var next = 0;
        var (p, delta) = MRope.Compute(ids, [new ImageGrid(1, 4, 6)], ref next, I, 2);
        long[] Row(int a) => Enumerable.Range(0, ids.Length).Select(t => p[a, t]).ToArray();
        Assert.Equal([0L, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7], Row(0));
        Assert.Equal([0L, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7], Row(1));
        Assert.Equal([0L, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7], Row(2));
        Assert.Equal(8 - 11, delta);
        Assert.Equal([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 0],
            MRope.FrequencyOwners([24, 20, 20]));
    }

    [Fact]
    public void Too_few_image_tokens_for_a_grid_are_refused()
    {
        const int I = 99;
        var next = 0;
        var e = Assert.Throws<ArgumentException>(() => MRope.Compute(new[] { 1, I, I, 2 }, [new ImageGrid(1, 4, 4)], ref next, I, 2));
        Assert.Contains("needs 4", e.Message);
    }
}
