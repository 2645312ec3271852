// The model's parameter names and shapes against the real Qwen3 checkpoints, built on the meta
// device (no weights allocated). Expected layouts, written out independently of our config code:
//  - Qwen/Qwen3-0.6B: config.json (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim 128,
//    intermediate 3072, vocab 151936, tie_word_embeddings true) and its single model.safetensors,
//    311 tensors: 28 × 11 per layer + embed_tokens + norm + lm_head.weight (stored although tied;
//    the loader ignores it). Source: huggingface.co/Qwen/Qwen3-0.6B, as listed tensor by tensor in
//    the public tesf777/nano-vllm repository (Qwen3-0.6B/Qwen3-0.6B_weights_info.md).
//  - Qwen/Qwen3-4B: config.json (hidden 2560, 36 layers, 32 heads, 8 KV heads, head_dim 128,
//    intermediate 9728, vocab 151936, tied) and model.safetensors.index.json: 398 tensors
//    (36 × 11 + embed_tokens + norm), no lm_head.weight. Source: huggingface.co/Qwen/Qwen3-4B.
using Anneal.Training.Model;
using Anneal.Training.Native;
using TorchSharp;

namespace Anneal.Training.Tests.Model;

public class Qwen3LayoutTests
{
    static Dictionary<string, long[]> RealLayout(int layers, long d, long q, long kv, long inter, bool storesLmHead)
    {
        var expected = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [151936, d],
            ["model.norm.weight"] = [d],
        };
        if (storesLmHead) expected["lm_head.weight"] = [151936, d];
        for (var i = 0; i < layers; i++)
        {
            var p = $"model.layers.{i}.";
            expected[p + "input_layernorm.weight"] = [d];
            expected[p + "post_attention_layernorm.weight"] = [d];
            expected[p + "self_attn.q_proj.weight"] = [q, d];
            expected[p + "self_attn.k_proj.weight"] = [kv, d];
            expected[p + "self_attn.v_proj.weight"] = [kv, d];
            expected[p + "self_attn.o_proj.weight"] = [d, q];
            expected[p + "self_attn.q_norm.weight"] = [128];
            expected[p + "self_attn.k_norm.weight"] = [128];
            expected[p + "mlp.gate_proj.weight"] = [inter, d];
            expected[p + "mlp.up_proj.weight"] = [inter, d];
            expected[p + "mlp.down_proj.weight"] = [d, inter];
        }
        return expected;
    }

    static Qwen3Config Config(int hidden, int layers, int heads, int inter) => new()
    {
        HiddenSize = hidden, NumHiddenLayers = layers, NumAttentionHeads = heads, NumKeyValueHeads = 8,
        HeadDim = 128, IntermediateSize = inter, VocabSize = 151936, TieWordEmbeddings = true,
        MaxPositionEmbeddings = 40960, RopeTheta = 1000000, RmsNormEps = 1e-6,
    };

    [Fact]
    public void Qwen3_0_6B_parameters_match_the_checkpoint()
    {
        NativeLibraries.EnsureTorchLoaded();
        using var model = new Qwen3ForCausalLM(Config(1024, 28, 16, 3072), torch.META, torch.ScalarType.BFloat16);
        var ours = model.ParameterShapes().ToDictionary(p => p.Name, p => p.Shape);
        var real = RealLayout(28, 1024, 2048, 1024, 3072, storesLmHead: true);
        Assert.Equal(311, real.Count);
        // Every parameter comes from the file; the file's extra lm_head.weight is the tied copy.
        Assert.Equal(real.Keys.Where(k => k != "lm_head.weight").Order(), ours.Keys.Order());
        foreach (var (name, shape) in ours) Assert.Equal(real[name], shape);
        Assert.Equal(596_049_920, ours.Values.Sum(s => s.Aggregate(1L, (a, b) => a * b)));
    }

    [Fact]
    public void Qwen3_4B_parameters_match_the_checkpoint_index()
    {
        NativeLibraries.EnsureTorchLoaded();
        using var model = new Qwen3ForCausalLM(Config(2560, 36, 32, 9728), torch.META, torch.ScalarType.BFloat16);
        var ours = model.ParameterShapes().ToDictionary(p => p.Name, p => p.Shape);
        var real = RealLayout(36, 2560, 4096, 1024, 9728, storesLmHead: false);
        Assert.Equal(398, real.Count);
        Assert.Equal(real.Keys.Order(), ours.Keys.Order());
        foreach (var (name, shape) in ours) Assert.Equal(real[name], shape);
    }
}
