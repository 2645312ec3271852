// Qwen3-VL parameter names and shapes against the real checkpoints' key tables, built on the meta
// device. Expected layouts written out independently of our config code, from the hub config.json
// files and the 8B safetensors index (750 tensors), as summarised in QWEN3VL.md §1 and §6:
//   2B: text 2048 × 28 layers, 16/8 heads, intermediate 6144, tied; vision depth 24, 1024 wide, 4096 MLP, taps [5, 11, 17]
//   4B: text 2560 × 36 layers, 32/8 heads, intermediate 9728, tied; vision as 2B
//   8B: text 4096 × 36 layers, 32/8 heads, intermediate 12288, lm_head stored; vision depth 27, 1152 wide, 4304 MLP, taps [8, 16, 24]
using Anneal.Training.Model;
using Anneal.Training.Native;
using TorchSharp;

namespace Anneal.Training.Tests.Model;

public class Qwen3VLLayoutTests
{
    static Dictionary<string, long[]> RealLayout(int layers, long d, long q, long inter, bool lmHead, int depth, long c, long vi, int taps)
    {
        const long V = 151936, kv = 1024;
        var e = new Dictionary<string, long[]>
        {
            ["model.language_model.embed_tokens.weight"] = [V, d],
            ["model.language_model.norm.weight"] = [d],
            ["model.visual.patch_embed.proj.weight"] = [c, 3, 2, 16, 16],
            ["model.visual.patch_embed.proj.bias"] = [c],
            ["model.visual.pos_embed.weight"] = [2304, c],
        };
        if (lmHead) e["lm_head.weight"] = [V, d];
        for (var i = 0; i < layers; i++)
        {
            var p = $"model.language_model.layers.{i}.";
            e[p + "input_layernorm.weight"] = [d];
            e[p + "post_attention_layernorm.weight"] = [d];
            e[p + "self_attn.q_proj.weight"] = [q, d];
            e[p + "self_attn.k_proj.weight"] = [kv, d];
            e[p + "self_attn.v_proj.weight"] = [kv, d];
            e[p + "self_attn.o_proj.weight"] = [d, q];
            e[p + "self_attn.q_norm.weight"] = [128];
            e[p + "self_attn.k_norm.weight"] = [128];
            e[p + "mlp.gate_proj.weight"] = [inter, d];
            e[p + "mlp.up_proj.weight"] = [inter, d];
            e[p + "mlp.down_proj.weight"] = [d, inter];
        }
        for (var j = 0; j < depth; j++)
        {
            var p = $"model.visual.blocks.{j}.";
            foreach (var n in new[] { "norm1", "norm2" }) { e[p + n + ".weight"] = [c]; e[p + n + ".bias"] = [c]; }
            e[p + "attn.qkv.weight"] = [3 * c, c];
            e[p + "attn.qkv.bias"] = [3 * c];
            e[p + "attn.proj.weight"] = [c, c];
            e[p + "attn.proj.bias"] = [c];
            e[p + "mlp.linear_fc1.weight"] = [vi, c];
            e[p + "mlp.linear_fc1.bias"] = [vi];
            e[p + "mlp.linear_fc2.weight"] = [c, vi];
            e[p + "mlp.linear_fc2.bias"] = [c];
        }
        void Merger(string p, long norm)
        {
            e[p + "norm.weight"] = [norm];
            e[p + "norm.bias"] = [norm];
            e[p + "linear_fc1.weight"] = [4 * c, 4 * c];
            e[p + "linear_fc1.bias"] = [4 * c];
            e[p + "linear_fc2.weight"] = [d, 4 * c];
            e[p + "linear_fc2.bias"] = [d];
        }
        Merger("model.visual.merger.", c);
        for (var k = 0; k < taps; k++) Merger($"model.visual.deepstack_merger_list.{k}.", 4 * c);
        return e;
    }

    static Qwen3VLConfig Config(int d, int layers, int heads, int inter, bool tied, int depth, int c, int vi, int[] taps) => new()
    {
        Text = new Qwen3Config
        {
            HiddenSize = d, NumHiddenLayers = layers, NumAttentionHeads = heads, NumKeyValueHeads = 8, HeadDim = 128,
            IntermediateSize = inter, VocabSize = 151936, TieWordEmbeddings = tied, MaxPositionEmbeddings = 262144,
            RopeTheta = 5_000_000, ModelType = "qwen3_vl_text",
        },
        Vision = new Qwen3VLVisionConfig
        {
            Depth = depth, HiddenSize = c, NumHeads = 16, IntermediateSize = vi, OutHiddenSize = d,
            NumPositionEmbeddings = 2304, DeepstackVisualIndexes = taps,
        },
        TieWordEmbeddings = tied,
    };

    public static IEnumerable<object[]> Sizes =>
    [
        ["2B", Config(2048, 28, 16, 6144, true, 24, 1024, 4096, [5, 11, 17]), RealLayout(28, 2048, 2048, 6144, false, 24, 1024, 4096, 3), 625],
        ["4B", Config(2560, 36, 32, 9728, true, 24, 1024, 4096, [5, 11, 17]), RealLayout(36, 2560, 4096, 9728, false, 24, 1024, 4096, 3), 713],
        ["8B", Config(4096, 36, 32, 12288, false, 27, 1152, 4304, [8, 16, 24]), RealLayout(36, 4096, 4096, 12288, true, 27, 1152, 4304, 3), 750],
    ];

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Parameters_match_the_checkpoint_key_table(string size, Qwen3VLConfig config, Dictionary<string, long[]> real, int tensors)
    {
        NativeLibraries.EnsureTorchLoaded();
        config.Validate(size);
        using var model = new Qwen3VLForConditionalGeneration(config, torch.META, torch.ScalarType.BFloat16);
        var ours = model.ParameterShapes().ToDictionary(p => p.Name, p => p.Shape);
        Assert.Equal(tensors, real.Count);
        Assert.Equal(real.Keys.Order(), ours.Keys.Order());
        foreach (var (name, shape) in ours) Assert.Equal(real[name], shape);
    }
}
