// What the OpenAI endpoints need from an engine, whichever model family it serves: the tokenizer,
// the context length, and a queue that turns a request into a stream of tokens. ServingEngine
// batches Qwen3 requests (continuous batching, multi-LoRA); VisionEngine serves Qwen3-VL with images.
using System.Threading.Channels;
using Anneal.Training.Tokenization;

namespace Anneal.Inference.Engine;

public interface IGenerationEngine : IDisposable
{
    string ModelDir { get; }
    Qwen3Tokenizer Tokenizer { get; }
    int MaxModelLength { get; }
    int MaxBatch { get; }
    string DeviceName { get; }
    /// <summary>Whether requests may carry images (Qwen3-VL).</summary>
    bool AcceptsImages { get; }

    /// <summary>Queues a request; tokens arrive on the returned reader, ending with a TokenEvent whose FinishReason or Error is set.</summary>
    ChannelReader<TokenEvent> Submit(GenerationRequest request, CancellationToken ct = default);
}
