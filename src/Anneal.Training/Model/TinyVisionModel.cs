// The built-in test model `anneal/tiny-qwen3-vl`: the real Qwen3-VL architecture (vision tower with
// interpolated position table, 2-D rotary, 2×2 merger, two deepstack taps; Qwen3 decoder with
// interleaved MRoPE) at about 1.3 million parameters, with the tiny byte-level BPE tokenizer (which
// has Qwen's vision tokens). Generated deterministically like anneal/tiny-qwen3: weights from a
// seeded System.Random, so every machine gets the same bytes.
//
// Sizes chosen so every mechanism is exercised on CPU in milliseconds: a 4×4 position table (any
// image grid is interpolated), vision head dim 16 (4 row + 4 column rotary frequencies), text head
// dim 32 with mrope_section [8, 4, 4] (interleaved THW×4 then TTTT), and a pixel budget of 64² to
// 128² so an image is 4 to 16 text tokens.
using System.Text.Json.Nodes;
using Anneal.Training.Checkpoints;
using Anneal.Training.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

public static class TinyVisionModel
{
    public const int Seed = 20251202;
    public const int MinPixels = 64 * 64;
    public const int MaxPixels = 128 * 128;

    public static Qwen3VLVisionConfig VisionConfig(int outHidden) => new()
    {
        Depth = 3, HiddenSize = 32, NumHeads = 2, IntermediateSize = 64, InChannels = 3, PatchSize = 16,
        TemporalPatchSize = 2, SpatialMergeSize = 2, OutHiddenSize = outHidden, NumPositionEmbeddings = 16,
        DeepstackVisualIndexes = [0, 1],
    };

    /// <summary>Creates the model folder unless it already holds a config.json and model.safetensors.</summary>
    public static void EnsureCreated(string folder) => TinyModel.EnsureCreated(folder, Write);

    static void Write(string folder)
    {
        TinyTokenizer.WriteFiles(folder);
        var tokenizer = Qwen3Tokenizer.Load(folder);
        int Id(string token) => tokenizer.TokenToId(token) ?? throw new InvalidOperationException($"the tiny tokenizer has no {token}");
        var text = TinyModel.Config(tokenizer.VocabSize, Id("<|endoftext|>"), Id("<|im_end|>")) with { ModelType = "qwen3_vl_text" };
        var vision = VisionConfig(text.HiddenSize);
        var config = new Qwen3VLConfig
        {
            Text = text, Vision = vision, MropeSection = [8, 4, 4], TieWordEmbeddings = true,
            ImageTokenId = Id("<|image_pad|>"), VideoTokenId = Id("<|video_pad|>"),
            VisionStartTokenId = Id("<|vision_start|>"), VisionEndTokenId = Id("<|vision_end|>"),
        };

        var json = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen3VLForConditionalGeneration"),
            ["model_type"] = "qwen3_vl",
            ["image_token_id"] = config.ImageTokenId,
            ["video_token_id"] = config.VideoTokenId,
            ["vision_start_token_id"] = config.VisionStartTokenId,
            ["vision_end_token_id"] = config.VisionEndTokenId,
            ["tie_word_embeddings"] = true,
            ["torch_dtype"] = "float32",
            ["text_config"] = new JsonObject
            {
                ["model_type"] = "qwen3_vl_text",
                ["vocab_size"] = text.VocabSize,
                ["hidden_size"] = text.HiddenSize,
                ["intermediate_size"] = text.IntermediateSize,
                ["num_hidden_layers"] = text.NumHiddenLayers,
                ["num_attention_heads"] = text.NumAttentionHeads,
                ["num_key_value_heads"] = text.NumKeyValueHeads,
                ["head_dim"] = text.HeadDim,
                ["max_position_embeddings"] = text.MaxPositionEmbeddings,
                ["rope_theta"] = text.RopeTheta,
                ["rope_scaling"] = new JsonObject { ["rope_type"] = "default", ["mrope_section"] = new JsonArray(8, 4, 4), ["mrope_interleaved"] = true },
                ["rms_norm_eps"] = text.RmsNormEps,
                ["tie_word_embeddings"] = true,
                ["attention_bias"] = false,
                ["attention_dropout"] = 0.0,
                ["hidden_act"] = "silu",
                ["initializer_range"] = TinyModel.InitStd,
                ["use_cache"] = true,
                ["bos_token_id"] = text.BosTokenId,
                ["eos_token_id"] = text.EosTokenId,
                ["torch_dtype"] = "float32",
            },
            ["vision_config"] = new JsonObject
            {
                ["model_type"] = "qwen3_vl",
                ["depth"] = vision.Depth,
                ["hidden_size"] = vision.HiddenSize,
                ["hidden_act"] = vision.HiddenAct,
                ["intermediate_size"] = vision.IntermediateSize,
                ["num_heads"] = vision.NumHeads,
                ["in_channels"] = vision.InChannels,
                ["patch_size"] = vision.PatchSize,
                ["spatial_merge_size"] = vision.SpatialMergeSize,
                ["temporal_patch_size"] = vision.TemporalPatchSize,
                ["out_hidden_size"] = vision.OutHiddenSize,
                ["num_position_embeddings"] = vision.NumPositionEmbeddings,
                ["deepstack_visual_indexes"] = new JsonArray(vision.DeepstackVisualIndexes.Select(i => (JsonNode)i).ToArray()),
                ["initializer_range"] = TinyModel.InitStd,
            },
        };
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), json.ToJsonString(new() { WriteIndented = true }));
        File.WriteAllText(Path.Combine(folder, ModelFolder.GenerationConfigFile), new JsonObject
        {
            ["bos_token_id"] = text.BosTokenId,
            ["eos_token_id"] = new JsonArray(text.EosTokenId, text.BosTokenId),
            ["pad_token_id"] = text.BosTokenId,
            ["do_sample"] = false,
        }.ToJsonString(new() { WriteIndented = true }));
        File.WriteAllText(Path.Combine(folder, VisionModelFolder.PreprocessorConfigFile), new JsonObject
        {
            ["size"] = new JsonObject { ["shortest_edge"] = MinPixels, ["longest_edge"] = MaxPixels },
            ["patch_size"] = vision.PatchSize,
            ["temporal_patch_size"] = vision.TemporalPatchSize,
            ["merge_size"] = vision.SpatialMergeSize,
            ["image_mean"] = new JsonArray(0.5, 0.5, 0.5),
            ["image_std"] = new JsonArray(0.5, 0.5, 0.5),
            ["do_convert_rgb"] = true,
            ["resample"] = 3,
            ["rescale_factor"] = 1 / 255.0,
            ["image_processor_type"] = "Qwen2VLImageProcessorFast",
            ["processor_class"] = "Qwen3VLProcessor",
        }.ToJsonString(new() { WriteIndented = true }));

        // Shapes from the model itself (meta device), values from a seeded generator: norm weights 1,
        // norm biases 0, everything else N(0, 0.02).
        using var shapes = new Qwen3VLForConditionalGeneration(config, torch.META, ScalarType.Float32);
        var random = new Random(Seed);
        var tensors = new List<(string, Tensor)>();
        foreach (var (name, shape) in shapes.ParameterShapes())
        {
            var count = (int)shape.Aggregate(1L, (a, b) => a * b);
            var values = new float[count];
            if (IsNorm(name) && name.EndsWith(".weight")) Array.Fill(values, 1f);
            else if (!IsNorm(name)) for (var i = 0; i < count; i++) values[i] = (float)(TinyModel.InitStd * TinyModel.Gaussian(random));
            tensors.Add((name, torch.tensor(values).reshape(shape)));
        }
        SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), tensors);
        foreach (var (_, t) in tensors) t.Dispose();
    }

    /// <summary>RMSNorm and LayerNorm parameters: `…norm.weight`, `…norm1.bias`, `…input_layernorm.weight`.</summary>
    static bool IsNorm(string name)
    {
        var module = name[..name.LastIndexOf('.')];
        var leaf = module[(module.LastIndexOf('.') + 1)..];
        return leaf.EndsWith("norm") || leaf is "norm1" or "norm2";
    }
}
