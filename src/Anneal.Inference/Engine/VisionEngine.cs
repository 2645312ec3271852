// Serving a Qwen3-VL model: requests whose prompts carry images (their pad runs already expanded to
// each image's token count, the processed patches beside them). Requests run one after another on
// the engine's own thread, each with its own KV cache (VisionGeneration.Decode: image features and
// 3-D positions in the prompt pass, text positions after it), sampled like ServingEngine's. Not
// batched: images make every prompt's tower pass and positions its own, and the batched decoder is
// Qwen3-only; a second request waits for the first.
using System.Threading.Channels;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Training.Tokenization;
using Anneal.Training.Vision;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

public sealed class VisionEngine : IGenerationEngine
{
    sealed record Pending(GenerationRequest Request, Channel<TokenEvent> Output, CancellationToken Ct);

    readonly Qwen3VLForConditionalGeneration _model;
    readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    readonly CancellationTokenSource _stop = new();
    readonly Thread _thread;

    public string ModelDir { get; }
    public Qwen3Tokenizer Tokenizer { get; }
    public ImageProcessorConfig Processor { get; }
    public Qwen3VLConfig Config => _model.Config;
    public HashSet<int> StopIds { get; }
    public int MaxModelLength { get; }
    public int MaxBatch => 1;
    public string DeviceName { get; }
    public bool AcceptsImages => true;

    VisionEngine(string modelDir, Qwen3VLForConditionalGeneration model, Qwen3Tokenizer tokenizer, EngineOptions options, string deviceName)
    {
        ModelDir = modelDir;
        _model = model;
        Tokenizer = tokenizer;
        Processor = ImageProcessorConfig.Load(modelDir);
        StopIds = Generation.StopIds(tokenizer, model.Config.Text, modelDir);
        MaxModelLength = Math.Min(options.MaxModelLength, model.Config.Text.MaxPositionEmbeddings);
        DeviceName = deviceName;
        _thread = new Thread(Loop) { IsBackground = true, Name = $"vision engine {Path.GetFileName(modelDir)}" };
        _thread.Start();
    }

    /// <summary>Loads a Qwen3-VL folder; bad folders throw TrainerUserException.</summary>
    public static VisionEngine Open(string modelDir, EngineOptions options)
    {
        NativeLibraries.EnsureTorchLoaded();
        var device = Trainer.PickDevice(options.Device);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var tokenizer = Trainer.LoadTokenizer(modelDir);
        var model = VisionModelFolder.Load(modelDir, device, dtype);
        model.eval();
        return new VisionEngine(Path.GetFullPath(modelDir), model, tokenizer, options, device.type == DeviceType.CUDA ? "cuda" : "cpu");
    }

    /// <summary>
    /// Prompt ids (one &lt;|image_pad|&gt; per image, as the chat template renders them) with each pad
    /// expanded to its image's token count, and the images processed for the tower.
    /// </summary>
    public (int[] Ids, List<ProcessedImage> Images) Expand(int[] ids, IReadOnlyList<Anneal.Core.Vision.RgbImage> images)
    {
        var pads = ids.Count(id => id == Config.ImageTokenId);
        if (pads != images.Count)
            throw new ArgumentException($"{pads} image placeholders in the rendered prompt for {images.Count} images (is <|image_pad|> written in a text part?)");
        var processed = images.Select(i => ImageProcessor.Process(i, Processor)).ToList();
        var expanded = new List<int>(ids.Length);
        var next = 0;
        foreach (var id in ids)
        {
            if (id == Config.ImageTokenId) expanded.AddRange(Enumerable.Repeat(id, processed[next++].Grid.Tokens(Processor.MergeSize)));
            else expanded.Add(id);
        }
        return (expanded.ToArray(), processed);
    }

    public ChannelReader<TokenEvent> Submit(GenerationRequest request, CancellationToken ct = default)
    {
        if (request.PromptIds.Length == 0) throw new ArgumentException("the prompt has no tokens", nameof(request));
        if (request.AdapterDir is not null) throw new ArgumentException("LoRA adapters are not served on Qwen3-VL models; serve the merged model", nameof(request));
        if (request.PromptIds.Length + request.MaxTokens > MaxModelLength)
            throw new ArgumentException($"prompt {request.PromptIds.Length} + max_tokens {request.MaxTokens} exceeds {MaxModelLength}", nameof(request));
        var channel = Channel.CreateUnbounded<TokenEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        if (!_queue.Writer.TryWrite(new Pending(request, channel, ct))) throw new ObjectDisposedException(nameof(VisionEngine));
        return channel.Reader;
    }

    void Loop()
    {
        var stop = _stop.Token;
        try
        {
            while (_queue.Reader.WaitToReadAsync(stop).AsTask().GetAwaiter().GetResult())
                while (_queue.Reader.TryRead(out var p)) Run(p, stop);
        }
        catch (OperationCanceledException) { }
        while (_queue.Reader.TryRead(out var p)) p.Output.Writer.TryComplete();
    }

    void Run(Pending p, CancellationToken stop)
    {
        var writer = p.Output.Writer;
        var r = p.Request;
        if (p.Ct.IsCancellationRequested || stop.IsCancellationRequested)
        {
            writer.TryWrite(new TokenEvent(-1, FinishReasons.Cancelled));
            writer.TryComplete();
            return;
        }
        var sampler = new Sampler(r.Sampling, r.ChoiceIndex);
        var finish = FinishReasons.Length;
        var generated = 0;
        try
        {
            using var both = CancellationTokenSource.CreateLinkedTokenSource(p.Ct, stop);
            VisionGeneration.Decode(_model, r.PromptIds, r.Images ?? [], Processor.MergeSize, r.MaxTokens, logits =>
            {
                using var host = logits.reshape(-1).to(ScalarType.Float32).cpu();
                return sampler.Next(host.data<float>().ToArray());
            }, token =>
            {
                if (!r.IgnoreEos && StopIds.Contains(token)) { finish = FinishReasons.Stop; return false; }
                writer.TryWrite(new TokenEvent(token));
                generated++;
                return generated < r.MaxTokens;
            }, both.Token);
            if (p.Ct.IsCancellationRequested || stop.IsCancellationRequested) finish = FinishReasons.Cancelled;
            writer.TryWrite(new TokenEvent(-1, finish));
        }
        catch (Exception e) { writer.TryWrite(new TokenEvent(-1, Error: e)); }
        writer.TryComplete();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _queue.Writer.TryComplete();
        _thread.Join();
        _model.Dispose();
    }
}
