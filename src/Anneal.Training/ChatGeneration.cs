// Greedy answers to whole conversations with one loaded model, for `anneal eval`: the model folder
// is loaded once (a full model, or a LoRA adapter over a local base: TrainerProcess.LoadForGeneration),
// then each conversation is rendered with the Qwen3 chat template (generation prompt added) and
// decoded with Generation.Greedy (KV cache; stops at <|im_end|> / eos or after maxNewTokens).
using System.Text.Json.Nodes;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Training.Tokenization;
using TorchSharp;

namespace Anneal.Training;

/// <param name="Text">The decoded answer, without the stop token.</param>
/// <param name="PromptTokens">Tokens of the rendered conversation.</param>
/// <param name="CompletionTokens">Generated tokens, without the stop token.</param>
public sealed record ChatAnswer(string Text, int PromptTokens, int CompletionTokens);

public sealed class ChatGenerator : IDisposable
{
    readonly Qwen3Tokenizer _tokenizer;
    readonly Qwen3ForCausalLM _model;
    readonly HashSet<int> _stops;

    public string Device { get; }

    ChatGenerator(Qwen3Tokenizer tokenizer, Qwen3ForCausalLM model, HashSet<int> stops, string device)
    {
        _tokenizer = tokenizer;
        _model = model;
        _stops = stops;
        Device = device;
    }

    /// <summary>Loads a model folder; a missing or unreadable folder throws TrainerUserException.</summary>
    /// <param name="device">auto (CUDA when available), cpu or cuda.</param>
    public static ChatGenerator Open(string modelDir, string device = "auto")
    {
        if (!Directory.Exists(modelDir))
            throw TrainerUserException.Config($"model folder {modelDir} does not exist");
        NativeLibraries.EnsureTorchLoaded();
        var dev = Trainer.PickDevice(device);
        var dtype = dev.type == DeviceType.CUDA ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32;
        var tokenizer = Trainer.LoadTokenizer(modelDir);
        var model = TrainerProcess.LoadForGeneration(modelDir, dev, dtype);
        return new ChatGenerator(tokenizer, model, Generation.StopIds(tokenizer, model.Config, modelDir), dev.type == DeviceType.CUDA ? "cuda" : "cpu");
    }

    /// <summary>The greedy answer to `messages` ([{role, content}, ...], ending with the user's turn).</summary>
    public ChatAnswer Answer(JsonArray messages, int maxNewTokens, CancellationToken ct = default)
    {
        var text = Qwen3ChatTemplate.Render(new JsonObject { ["messages"] = messages.DeepClone() }, addGenerationPrompt: true);
        var promptIds = _tokenizer.Encode(text);
        var ids = Generation.Greedy(_model, promptIds, maxNewTokens, _stops, ct);
        return new ChatAnswer(_tokenizer.Decode(ids), promptIds.Length, ids.Count);
    }

    public void Dispose() => _model.Dispose();
}
