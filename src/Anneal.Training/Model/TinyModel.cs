// The built-in test model `anneal/tiny-qwen3`: a real Qwen3 architecture (q/k norms, GQA, tied
// embeddings) at about a million parameters, with the tiny byte-level BPE tokenizer. Generated
// deterministically: the same bytes on every machine (weights from a seeded System.Random, not
// libtorch's generator), so tests and the demo can rely on it.
using System.Text.Json.Nodes;
using Anneal.Training.Checkpoints;
using Anneal.Training.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

public static class TinyModel
{
    public const int Seed = 20251124;
    public const double InitStd = 0.02;

    public static Qwen3Config Config(int vocabSize, int? bos, int? eos) => new()
    {
        VocabSize = vocabSize,
        HiddenSize = 128,
        IntermediateSize = 384,
        NumHiddenLayers = 4,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        HeadDim = 32,
        MaxPositionEmbeddings = 2048,
        RopeTheta = 1_000_000,
        RmsNormEps = 1e-6,
        TieWordEmbeddings = true,
        TorchDtype = "float32",
        BosTokenId = bos,
        EosTokenId = eos,
    };

    /// <summary>Creates the model folder unless it already holds a config.json and model.safetensors.</summary>
    public static void EnsureCreated(string folder) => EnsureCreated(folder, Write);

    /// <summary>Creates a model folder with `write` unless it already holds a config.json and model.safetensors.</summary>
    internal static void EnsureCreated(string folder, Action<string> write)
    {
        if (File.Exists(Path.Combine(folder, ModelFolder.ConfigFile)) && File.Exists(Path.Combine(folder, ModelFolder.WeightsFile)))
            return;
        var parent = Path.GetDirectoryName(Path.GetFullPath(folder))!;
        Directory.CreateDirectory(parent);
        // Built beside the target and renamed, so a concurrent reader never sees half a model.
        var tmp = Path.Combine(parent, $".{Path.GetFileName(folder)}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            write(tmp);
            try { Directory.Move(tmp, folder); }
            catch (IOException) when (File.Exists(Path.Combine(folder, ModelFolder.WeightsFile))) { /* another process won */ }
            catch (IOException) when (Directory.Exists(folder))
            {
                // An incomplete folder (e.g. only a tokenizer) is completed file by file.
                foreach (var f in Directory.GetFiles(tmp))
                    File.Copy(f, Path.Combine(folder, Path.GetFileName(f)), overwrite: true);
            }
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        }
    }

    static void Write(string folder)
    {
        TinyTokenizer.WriteFiles(folder);
        var tokenizer = Qwen3Tokenizer.Load(folder);
        int? imEnd = tokenizer.TokenToId("<|im_end|>");
        int? endOfText = tokenizer.TokenToId("<|endoftext|>");
        var config = Config(tokenizer.VocabSize, endOfText, imEnd ?? tokenizer.EosTokenId);

        var json = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen3ForCausalLM"),
            ["model_type"] = "qwen3",
            ["vocab_size"] = config.VocabSize,
            ["hidden_size"] = config.HiddenSize,
            ["intermediate_size"] = config.IntermediateSize,
            ["num_hidden_layers"] = config.NumHiddenLayers,
            ["num_attention_heads"] = config.NumAttentionHeads,
            ["num_key_value_heads"] = config.NumKeyValueHeads,
            ["head_dim"] = config.HeadDim,
            ["max_position_embeddings"] = config.MaxPositionEmbeddings,
            ["rope_theta"] = config.RopeTheta,
            ["rope_scaling"] = null,
            ["rms_norm_eps"] = config.RmsNormEps,
            ["tie_word_embeddings"] = config.TieWordEmbeddings,
            ["attention_bias"] = false,
            ["attention_dropout"] = 0.0,
            ["hidden_act"] = "silu",
            ["initializer_range"] = InitStd,
            ["use_cache"] = true,
            ["use_sliding_window"] = false,
            ["sliding_window"] = null,
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = config.EosTokenId,
            ["torch_dtype"] = config.TorchDtype,
        };
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), json.ToJsonString(new() { WriteIndented = true }));
        File.WriteAllText(Path.Combine(folder, ModelFolder.GenerationConfigFile), new JsonObject
        {
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = new JsonArray(config.EosTokenId, config.BosTokenId),
            ["pad_token_id"] = config.BosTokenId,
            ["do_sample"] = false,
        }.ToJsonString(new() { WriteIndented = true }));

        // Shapes from the model itself (built on the meta device), values from a seeded generator:
        // norms 1, everything else N(0, 0.02).
        using var shapes = new Qwen3ForCausalLM(config, torch.META, ScalarType.Float32);
        var random = new Random(Seed);
        var tensors = new List<(string, Tensor)>();
        foreach (var (name, shape) in shapes.ParameterShapes())
        {
            var count = (int)shape.Aggregate(1L, (a, b) => a * b);
            var values = new float[count];
            if (name.EndsWith("norm.weight")) Array.Fill(values, 1f);
            else for (var i = 0; i < count; i++) values[i] = (float)(InitStd * Gaussian(random));
            tensors.Add((name, torch.tensor(values).reshape(shape)));
        }
        SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), tensors);
        foreach (var (_, t) in tensors) t.Dispose();
    }

    internal static double Gaussian(Random random)
    {
        // Box–Muller; 1 - NextDouble() keeps the logarithm's argument in (0, 1].
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
