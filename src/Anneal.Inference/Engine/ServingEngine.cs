// Continuous batching over one base model (Orca-style iteration-level scheduling): requests wait
// in a queue for a free KV cache slot; each loop iteration first prefills newly admitted prompts
// (one forward each, giving their first token), then runs ONE batched decode step for every
// running sequence, whatever its length, adapter or sampling settings. A sequence leaves the batch
// the moment it ends (stop token, max_tokens, cancelled) and its slot goes to the next request, so
// concurrent requests share decode steps instead of waiting for each other. All libtorch work
// happens on the engine's own thread; callers read tokens from a channel.
using System.Threading.Channels;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Training.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

public sealed record EngineOptions
{
    /// <summary>Sequences decoded together (KV cache slots).</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Longest prompt + answer in tokens; capped by the model's max_position_embeddings.</summary>
    public int MaxModelLength { get; init; } = 4096;
    /// <summary>LoRA adapters kept in memory per base model before the least recently used is evicted.</summary>
    public long AdapterBudgetBytes { get; init; } = 1L << 30;
    /// <summary>auto (CUDA when available), cpu or cuda.</summary>
    public string Device { get; init; } = "auto";
}

/// <param name="AdapterDir">a PEFT adapter folder applied on this engine's base model, or null.</param>
/// <param name="IgnoreEos">keep generating through stop tokens until MaxTokens (benchmarks).</param>
public sealed record GenerationRequest(int[] PromptIds, int MaxTokens, SamplingParams Sampling, int ChoiceIndex = 0, string? AdapterDir = null, bool IgnoreEos = false);

/// <summary>A generated token, or the end of the sequence (Token -1) with its finish reason or error.</summary>
public readonly record struct TokenEvent(int Token, string? FinishReason = null, Exception? Error = null);

public static class FinishReasons
{
    public const string Stop = "stop", Length = "length", Cancelled = "cancelled";
}

public sealed class ServingEngine : IDisposable
{
    sealed class Sequence(GenerationRequest request, Channel<TokenEvent> output, CancellationToken ct)
    {
        public readonly GenerationRequest Request = request;
        public readonly Channel<TokenEvent> Output = output;
        public readonly CancellationToken Ct = ct;
        public readonly Sampler Sampler = new(request.Sampling, request.ChoiceIndex);
        public int Slot = -1, Cached, Generated, Next;
        public LoraAdapter? Adapter;
    }

    readonly Qwen3ForCausalLM _model;
    readonly BatchedDecoder _decoder;
    readonly SlotKvCache _cache;
    readonly AdapterCache _adapters;
    readonly Queue<Sequence> _pending = new();
    readonly List<Sequence> _running = [];
    readonly SemaphoreSlim _wake = new(0);
    readonly CancellationTokenSource _stop = new();
    readonly Thread _thread;

    public string ModelDir { get; }
    public Qwen3Tokenizer Tokenizer { get; }
    public HashSet<int> StopIds { get; }
    public int MaxModelLength { get; }
    public int MaxBatch { get; }
    public string DeviceName { get; }
    /// <summary>Decode steps run and the rows they carried (rows / steps = mean batch size).</summary>
    public long DecodeSteps { get; private set; }
    public long DecodeRows { get; private set; }
    public int AdapterLoads => _adapters.Loads;
    public IReadOnlyCollection<string> LoadedAdapters => _adapters.Loaded;

    ServingEngine(string modelDir, Qwen3ForCausalLM model, Qwen3Tokenizer tokenizer, EngineOptions options, string deviceName)
    {
        ModelDir = modelDir;
        _model = model;
        Tokenizer = tokenizer;
        StopIds = Generation.StopIds(tokenizer, model.Config, modelDir);
        _decoder = new BatchedDecoder(model);
        var c = model.Config;
        MaxModelLength = Math.Min(options.MaxModelLength, c.MaxPositionEmbeddings);
        MaxBatch = options.MaxBatch;
        DeviceName = deviceName;
        _cache = new SlotKvCache(c.NumHiddenLayers, options.MaxBatch, MaxModelLength, c.NumKeyValueHeads, c.HeadDim, _decoder.Device, _decoder.DType);
        _adapters = new AdapterCache(c, _decoder.Device, _decoder.DType, options.AdapterBudgetBytes);
        _thread = new Thread(Loop) { IsBackground = true, Name = $"engine {Path.GetFileName(modelDir)}" };
        _thread.Start();
    }

    /// <summary>Loads a full model folder (config.json + safetensors + tokenizer); bad folders throw TrainerUserException.</summary>
    public static ServingEngine Open(string modelDir, EngineOptions options)
    {
        if (options.MaxBatch < 1) throw new ArgumentOutOfRangeException(nameof(options), $"max batch {options.MaxBatch} must be at least 1");
        NativeLibraries.EnsureTorchLoaded();
        var device = Trainer.PickDevice(options.Device);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var tokenizer = Trainer.LoadTokenizer(modelDir);
        var model = ModelFolder.Load(modelDir, device, dtype);
        model.eval();
        return new ServingEngine(Path.GetFullPath(modelDir), model, tokenizer, options, device.type == DeviceType.CUDA ? "cuda" : "cpu");
    }

    /// <summary>Queues a request; tokens arrive on the returned reader, ending with a TokenEvent whose FinishReason or Error is set.</summary>
    public ChannelReader<TokenEvent> Submit(GenerationRequest request, CancellationToken ct = default)
    {
        if (request.PromptIds.Length == 0) throw new ArgumentException("the prompt has no tokens", nameof(request));
        if (request.PromptIds.Length + request.MaxTokens > MaxModelLength)
            throw new ArgumentException($"prompt {request.PromptIds.Length} + max_tokens {request.MaxTokens} exceeds {MaxModelLength}", nameof(request));
        var channel = Channel.CreateUnbounded<TokenEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        lock (_pending) _pending.Enqueue(new Sequence(request, channel, ct));
        _wake.Release();
        return channel.Reader;
    }

    void Loop()
    {
        var stop = _stop.Token;
        while (!stop.IsCancellationRequested)
        {
            while (_cache.FreeSlots > 0)
            {
                Sequence? next;
                lock (_pending) _pending.TryDequeue(out next);
                if (next is null) break;
                Admit(next);
            }
            if (_running.Count == 0)
            {
                try { _wake.Wait(stop); } catch (OperationCanceledException) { break; }
                continue;
            }
            DecodeStep();
        }
        foreach (var s in _running.ToList()) Finish(s, FinishReasons.Cancelled);
        lock (_pending)
            while (_pending.TryDequeue(out var s)) s.Output.Writer.TryComplete();
    }

    void Admit(Sequence s)
    {
        if (s.Ct.IsCancellationRequested) { s.Output.Writer.TryWrite(new TokenEvent(-1, FinishReasons.Cancelled)); s.Output.Writer.TryComplete(); return; }
        try
        {
            if (s.Request.AdapterDir is { } dir) s.Adapter = _adapters.Acquire(dir);
            s.Slot = _cache.Take();
            _running.Add(s);
            var prompt = s.Request.PromptIds.Select(i => (long)i).ToArray();
            using var logits = _decoder.Forward(prompt, prompt.Length, [new BatchRow(s.Slot, 0, s.Adapter)], _cache);
            s.Cached = prompt.Length;
            Accept(s, s.Sampler.Next(Row(logits, 0)));
        }
        catch (Exception e)
        {
            Fail(s, e);
        }
    }

    void DecodeStep()
    {
        foreach (var s in _running.Where(s => s.Ct.IsCancellationRequested).ToList()) Finish(s, FinishReasons.Cancelled);
        if (_running.Count == 0) return;
        var batch = _running.ToList();
        try
        {
            var rows = batch.Select(s => new BatchRow(s.Slot, s.Cached, s.Adapter)).ToList();
            using var logits = _decoder.Forward(batch.Select(s => (long)s.Next).ToArray(), 1, rows, _cache);
            var all = HostLogits(logits);
            var V = (int)logits.shape[1];
            DecodeSteps++;
            DecodeRows += batch.Count;
            for (var b = 0; b < batch.Count; b++)
            {
                batch[b].Cached++;
                Accept(batch[b], batch[b].Sampler.Next(all.AsSpan(b * V, V)));
            }
        }
        catch (Exception e)
        {
            foreach (var s in batch) Fail(s, e);
        }
    }

    static float[] HostLogits(Tensor logits)
    {
        using var host = logits.to(ScalarType.Float32).cpu();
        return host.data<float>().ToArray();
    }

    static float[] Row(Tensor logits, int row)
    {
        using var r = logits[row];
        return HostLogits(r);
    }

    /// <summary>Hands the token to the caller, or ends the sequence (stop token, max_tokens, context full).</summary>
    void Accept(Sequence s, int token)
    {
        if (!s.Request.IgnoreEos && StopIds.Contains(token)) { Finish(s, FinishReasons.Stop); return; }
        s.Output.Writer.TryWrite(new TokenEvent(token));
        s.Generated++;
        s.Next = token;
        if (s.Generated >= s.Request.MaxTokens || s.Cached + 1 > MaxModelLength) Finish(s, FinishReasons.Length);
    }

    void Finish(Sequence s, string reason)
    {
        Release(s);
        s.Output.Writer.TryWrite(new TokenEvent(-1, reason));
        s.Output.Writer.TryComplete();
    }

    void Fail(Sequence s, Exception e)
    {
        Release(s);
        s.Output.Writer.TryWrite(new TokenEvent(-1, Error: e));
        s.Output.Writer.TryComplete();
    }

    void Release(Sequence s)
    {
        if (_running.Remove(s) && s.Slot >= 0) _cache.Release(s.Slot);
        s.Slot = -1;
        if (s.Adapter is { } a) _adapters.Release(a);
        s.Adapter = null;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _adapters.Dispose();
        _cache.Dispose();
        _model.Dispose();
    }
}
