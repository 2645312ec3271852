// Parity of the Qwen3 forward pass with a second, deliberately naive implementation written from
// the Hugging Face definition (modeling_qwen3.py) in float64: explicit softmax attention with a
// causal mask, key/value head h·K/H for query head h, rotary angles p·θ^(-2i/hd) applied to the
// two halves of each head, RMSNorm x/√(mean(x²)+ε)·w, SwiGLU. The model under test runs in float32.
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Model;

public class Qwen3ReferenceTests(ITestOutputHelper output)
{
    static Tensor Rms(Tensor x, Tensor w, double eps) => x / (x.pow(2).mean([-1L], keepdim: true) + eps).sqrt() * w;

    static Tensor Rope(Tensor x, long[] positions, double theta)           // x (T, hd) for one head
    {
        var hd = x.shape[1];
        var half = hd / 2;
        var angles = torch.zeros(positions.Length, half, dtype: ScalarType.Float64);
        for (var t = 0; t < positions.Length; t++)
            for (var i = 0; i < half; i++)
                angles[t, i] = positions[t] * Math.Pow(theta, -2.0 * i / hd);
        var (x1, x2) = (x[.., ..(int)half], x[.., (int)half..]);
        var (cos, sin) = (angles.cos(), angles.sin());
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], 1);
    }

    static Tensor ReferenceLogits(Qwen3Config c, Dictionary<string, Tensor> w, long[] ids)
    {
        Tensor W(string name) => w[name].to(ScalarType.Float64);
        var T = ids.Length;
        var positions = Enumerable.Range(0, T).Select(i => (long)i).ToArray();
        var x = W("model.embed_tokens.weight").index_select(0, torch.tensor(ids));            // (T, D)
        var causal = torch.ones(T, T, dtype: ScalarType.Bool).triu(1);
        for (var l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = $"model.layers.{l}.";
            var h = Rms(x, W(p + "input_layernorm.weight"), c.RmsNormEps);
            var q = h.matmul(W(p + "self_attn.q_proj.weight").t());
            var k = h.matmul(W(p + "self_attn.k_proj.weight").t());
            var v = h.matmul(W(p + "self_attn.v_proj.weight").t());
            var heads = new List<Tensor>();
            for (var head = 0; head < c.NumAttentionHeads; head++)
            {
                var kv = head * c.NumKeyValueHeads / c.NumAttentionHeads;
                var qh = q[.., (head * c.HeadDim)..((head + 1) * c.HeadDim)];
                var kh = k[.., (kv * c.HeadDim)..((kv + 1) * c.HeadDim)];
                var vh = v[.., (kv * c.HeadDim)..((kv + 1) * c.HeadDim)];
                qh = Rope(Rms(qh, W(p + "self_attn.q_norm.weight"), c.RmsNormEps), positions, c.RopeTheta);
                kh = Rope(Rms(kh, W(p + "self_attn.k_norm.weight"), c.RmsNormEps), positions, c.RopeTheta);
                var scores = qh.matmul(kh.t()) / Math.Sqrt(c.HeadDim);
                scores = scores.masked_fill(causal, double.NegativeInfinity);
                heads.Add(scores.softmax(-1).matmul(vh));
            }
            x = x + torch.cat(heads, 1).matmul(W(p + "self_attn.o_proj.weight").t());
            h = Rms(x, W(p + "post_attention_layernorm.weight"), c.RmsNormEps);
            var gate = h.matmul(W(p + "mlp.gate_proj.weight").t());
            var up = h.matmul(W(p + "mlp.up_proj.weight").t());
            x = x + (gate * gate.sigmoid() * up).matmul(W(p + "mlp.down_proj.weight").t());
        }
        x = Rms(x, W("model.norm.weight"), c.RmsNormEps);
        return x.matmul(W(c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight").t());   // (T, V)
    }

    [Fact]
    public void Forward_matches_a_naive_float64_reference()
    {
        var dir = TinyFixture.ModelDir;
        using var model = ModelFolder.Load(dir, CPU, ScalarType.Float32);
        // Non-trivial norm weights, so a misplaced norm cannot hide behind weights of 1.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters().Where(p => p.name.EndsWith("norm.weight")))
                p.copy_(1 + 0.3 * torch.sin(torch.arange(p.numel(), dtype: ScalarType.Float32) * (name.Length % 7 + 1)));
        var weights = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach());

        long[] ids = [3, 17, 250, 9, 44, 101, 7, 300, 12, 5, 61, 2];
        model.eval();
        using var _ = no_grad();
        var ours = model.call(torch.tensor(ids).view(1, -1), torch.arange(ids.Length, dtype: ScalarType.Int64).view(1, -1), null)[0];
        var reference = ReferenceLogits(model.Config, weights, ids);
        var diff = TestTensors.MaxDiff(ours, reference);
        var scale = reference.abs().max().item<double>();
        output.WriteLine($"max |ours - reference| = {diff:E3} (logits up to {scale:F3})");
        Assert.True(diff < 1e-4 * Math.Max(1, scale), $"maxdiff {diff}");
    }

    [Fact]
    public void Gradients_match_the_naive_float64_reference()
    {
        // The custom autograd nodes (RMSNorm, rotary, SwiGLU) against autograd through the naive
        // reference, every parameter, in float64. The model computes rotary angles in fp32 as Hugging
        // Face does (the reference in fp64), which bounds the agreement near fp32 precision; the
        // kernels alone agree with composed ops to 1e-12 (Kernels/LayerKernelsTests).
        using var model = ModelFolder.Load(TinyFixture.ModelDir, CPU, ScalarType.Float64);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters().Where(p => p.name.EndsWith("norm.weight")))
                p.copy_(1 + 0.3 * torch.sin(torch.arange(p.numel(), dtype: ScalarType.Float64) * (name.Length % 7 + 1)));
        var leaves = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone().requires_grad_());

        long[] ids = [3, 17, 250, 9, 44, 101, 7, 300, 12, 5, 61, 2];
        var probe = torch.randn([ids.Length, model.Config.VocabSize], dtype: ScalarType.Float64, generator: new Generator(3));
        var ours = model.call(torch.tensor(ids).view(1, -1), torch.arange(ids.Length, dtype: ScalarType.Int64).view(1, -1), null)[0];
        (ours * probe).sum().backward();
        (ReferenceLogits(model.Config, leaves, ids) * probe).sum().backward();

        var worst = 0.0;
        foreach (var (name, p) in model.named_parameters())
        {
            var expected = leaves[name].grad!;
            var scale = Math.Max(1e-3, expected.abs().max().item<double>());
            var diff = TestTensors.MaxDiff(p.grad!, expected) / scale;
            worst = Math.Max(worst, diff);
            Assert.True(diff < 1e-6, $"{name}: relative gradient difference {diff:E3}");
        }
        output.WriteLine($"largest relative gradient difference {worst:E3} over {leaves.Count} parameters");
    }
}
