// Greedy decoding with a KV cache, for `anneal generate`, the demo and tests: the prompt is one user
// turn rendered with the model's chat template (generation prompt added), and decoding stops at
// <|im_end|> / <|endoftext|> / the configured eos, or after maxNewTokens.
using System.Text.Json.Nodes;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training;

public static class Generation
{
    /// <summary>Chat-templated prompt ids for one user message.</summary>
    public static int[] PromptIds(Qwen3Tokenizer tokenizer, string prompt, string? system = null)
    {
        var messages = new JsonArray();
        if (system != null) messages.Add(new JsonObject { ["role"] = "system", ["content"] = system });
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = prompt });
        var text = Qwen3ChatTemplate.Render(new JsonObject { ["messages"] = messages }, addGenerationPrompt: true);
        return tokenizer.Encode(text);
    }

    /// <summary>Tokens that end an answer: the tokenizer's eos, the chat end tokens, and the model's
    /// eos_token_id(s) from config.json and generation_config.json (a number or a list).</summary>
    public static HashSet<int> StopIds(Qwen3Tokenizer tokenizer, Qwen3Config config, string? modelDir = null)
    {
        var stops = new HashSet<int> { tokenizer.EosTokenId };
        foreach (var t in new[] { "<|im_end|>", "<|endoftext|>" })
            if (tokenizer.TokenToId(t) is { } id) stops.Add(id);
        if (config.EosTokenId is { } eos) stops.Add(eos);
        var generation = modelDir == null ? null : Path.Combine(modelDir, "generation_config.json");
        if (generation != null && File.Exists(generation))
        {
            var node = JsonNode.Parse(File.ReadAllText(generation))?["eos_token_id"];
            foreach (var id in node is JsonArray list ? list : node is null ? [] : new JsonArray(node.DeepClone()))
                if (id is JsonValue v && v.TryGetValue<int>(out var x)) stops.Add(x);
        }
        return stops;
    }

    /// <summary>Greedy continuation of `promptIds` (without the stop token).</summary>
    public static List<int> Greedy(Qwen3ForCausalLM model, IReadOnlyList<int> promptIds, int maxNewTokens, ISet<int> stopIds, CancellationToken ct = default)
    {
        model.eval();
        using var _ = no_grad();
        var device = model.OutputWeight.device;
        using var cache = new KvCache(model.Config.NumHiddenLayers);
        var output = new List<int>();
        var next = promptIds.Select(i => (long)i).ToArray();
        var position = 0L;
        for (var i = 0; i < maxNewTokens && !ct.IsCancellationRequested; i++)
        {
            using var scope = NewDisposeScope();
            var T = next.Length;
            var ids = torch.tensor(next, dtype: ScalarType.Int64, device: device).view(1, T);
            var positions = torch.arange(position, position + T, dtype: ScalarType.Int64, device: device).view(1, T);
            // The first pass over the prompt is plain causal; later single tokens see the whole cache.
            Tensor? mask = null;
            if (position > 0)
                mask = torch.ones(1, 1, T, position + T, dtype: ScalarType.Bool, device: device);
            var hidden = model.Hidden(ids, positions, mask, cache);                           // (1, T, D)
            var logits = model.Logits(hidden.narrow(1, T - 1, 1));                             // (1, 1, V)
            var token = (int)logits.argmax(-1).item<long>();
            position += T;
            if (stopIds.Contains(token)) break;
            output.Add(token);
            next = [token];
        }
        return output;
    }
}
