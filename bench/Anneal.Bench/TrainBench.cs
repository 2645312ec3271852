// Training-step throughput of the trainer's Qwen3 model, measured like bench/anchor/hf_anchor.py:
// random-initialised Qwen3 shapes, random tokens, micro × seq tokens a step, labels = inputs
// (next-token loss over seq−1 positions), 2 warm-up steps, then the mean of --steps steps.
// FLOPs per token as the anchor counts them: 6·N (full) or 4·N (LoRA) + 12·L·heads·head_dim·seq/2.
// Memory: device memory in use after the timed steps (cudaMemGetInfo: total − free; this includes
// the CUDA context and the caching allocator's reserve). The anchor copy reports the same figure
// as device_used_gib beside PyTorch's max_memory_allocated.
using System.Diagnostics;
using System.Text.Json;
using Anneal.Core.Training;
using Anneal.Training.Kernels;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

static class TrainBench
{
    const double H100PeakTflops = 989;  // bf16 dense

    public static Qwen3Config Shape(string name) => name switch
    {
        "qwen3-0.6b" => Qwen(1024, 3072, 28, 16, 8),
        "qwen3-1.7b" => Qwen(2048, 6144, 28, 16, 8),
        "qwen3-4b" => Qwen(2560, 9728, 36, 32, 8),
        "tiny" => Qwen(64, 192, 2, 4, 2, headDim: 16, vocab: 1024),
        "small" => Qwen(256, 768, 4, 8, 4, headDim: 32, vocab: 8192),
        "100m" => Qwen(768, 2048, 12, 12, 4, headDim: 64, vocab: 32000),
        _ => throw new ArgumentException($"--shape {name}: expected qwen3-0.6b, qwen3-1.7b, qwen3-4b, 100m, small or tiny"),
    };

    static Qwen3Config Qwen(int hidden, int intermediate, int layers, int heads, int kvHeads, int headDim = 128, int vocab = 151936) => new()
    {
        VocabSize = vocab, HiddenSize = hidden, IntermediateSize = intermediate, NumHiddenLayers = layers,
        NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, HeadDim = headDim, RopeTheta = 1000000.0,
        RmsNormEps = 1e-6, TieWordEmbeddings = true, MaxPositionEmbeddings = 40960,
    };

    public static void Run(Options o, Device device)
    {
        if (o.Mode is not ("full" or "lora" or "qlora")) throw new ArgumentException($"--mode {o.Mode}: expected full, lora or qlora");
        if (o.Optimizer is not ("flat" or "torch")) throw new ArgumentException($"--optimizer {o.Optimizer}: expected flat or torch");
        if (o.Loss is not ("chunked" or "plain")) throw new ArgumentException($"--loss {o.Loss}: expected chunked or plain");
        var cfg = Shape(o.Shape);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        torch.manual_seed(0);
        var model = new Qwen3ForCausalLM(cfg, device, dtype, o.Mode == "full" ? null : new LoraSettings(), nf4Base: o.Mode == "qlora");
        // QLoRA: random N(0, 0.02) bases quantised layer by layer (the NF4 weights are not parameters).
        using (no_grad())
            foreach (var q in model.modules().OfType<QloraLinear>())
            {
                using var w = randn(q.BaseWeight.Shape, dtype, device) * 0.02;
                q.LoadBase(w);
            }
        long nparams = model.parameters().Sum(p => p.numel()) + model.modules().OfType<QloraLinear>().Sum(q => q.BaseWeight.Count);
        if (o.Checkpointing)
        {
            var inner = (Qwen3Model)model.named_children().Single(c => c.name == "model").module;
            inner.LayerRunner = (layer, h, a) => ActivationCheckpoint.Run(
                (x, c) => layer.call(x, new AttentionInputs(c[0], c[1], c.Count > 2 ? c[2] : null, null)),
                h, a.Mask is null ? [a.Cos, a.Sin] : [a.Cos, a.Sin, a.Mask], layer.parameters());
        }
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        FlatAdamW? flat = null;
        TorchSharp.Modules.AdamW? reference = null;
        if (o.Optimizer == "flat") flat = new FlatAdamW(trainable.Select(p => (p.name, p.parameter)), weightDecay: 0.01, fp32MasterWeights: o.MasterWeights,
            precision: o.Lean ? OptimizerPrecision.Lean : OptimizerPrecision.Exact);
        else reference = optim.AdamW(trainable.Select(p => p.parameter), lr: 1e-5, weight_decay: 0.01);

        var ids = randint(0, cfg.VocabSize, [o.Micro, o.Seq], device: device);
        var positions = arange(o.Seq, device: device).unsqueeze(0).expand(o.Micro, o.Seq);
        var targets = ids.narrow(1, 1, o.Seq - 1).reshape(-1);
        double trained = o.Micro * (o.Seq - 1);
        float lastLoss = 0;

        void Step()
        {
            using var scope = NewDisposeScope();
            var hidden = model.Hidden(ids, positions, null);                                  // (B, T, D)
            var h = hidden.narrow(1, 0, o.Seq - 1).reshape(-1, cfg.HiddenSize);               // (B·(T−1), D)
            var sum = o.Loss == "chunked"
                ? ChunkedCrossEntropy.Sum(h, model.OutputWeight, targets)
                : ChunkedCrossEntropy.PlainSum(h, model.OutputWeight, targets);
            var loss = sum / trained;
            loss.backward();
            if (flat is not null) { flat.Step(1e-5); flat.ZeroGrad(); }
            else { reference!.step(); reference.zero_grad(); }
            if (device.type == DeviceType.CPU) lastLoss = loss.item<float>();
        }

        string? error = null;
        double stepMs = double.NaN;
        try
        {
            for (int i = 0; i < 2; i++) Step();
            Sync(device);
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < o.Steps; i++) Step();
            Sync(device);
            stepMs = sw.Elapsed.TotalMilliseconds / o.Steps;
        }
        catch (Exception e)
        {
            error = e.Message.Split('\n')[0];
        }
        double tokensPerS = o.Micro * o.Seq / (stepMs / 1000);
        double flopsPerToken = (o.Mode == "full" ? 6.0 : 4.0) * nparams
            + 12.0 * cfg.NumHiddenLayers * cfg.NumAttentionHeads * cfg.HeadDim * o.Seq / 2;
        double tflops = tokensPerS * flopsPerToken / 1e12;
        double usedGib = DeviceMemory.UsedBytes(device) / (1L << 30);
        var row = new Dictionary<string, object?>
        {
            ["engine"] = "anneal", ["model"] = o.Shape, ["mode"] = o.Mode, ["seq"] = o.Seq, ["micro"] = o.Micro,
            ["ckpt"] = o.Checkpointing, ["optimizer"] = o.Optimizer + (o.Optimizer == "flat" && o.Lean ? " (lean)" : o.Optimizer == "flat" && !o.MasterWeights ? " (no master)" : ""), ["loss"] = o.Loss, ["params_b"] = Math.Round(nparams / 1e9, 3),
            ["step_ms"] = Finite(stepMs, 1), ["tokens_per_s"] = Finite(tokensPerS, 0), ["tflops"] = Finite(tflops, 1),
            ["mfu"] = Finite(tflops / H100PeakTflops, 3), ["device_used_gib"] = double.IsNaN(usedGib) ? null : Math.Round(usedGib, 1),
            ["cpu_last_loss"] = device.type == DeviceType.CPU ? lastLoss : null, ["error"] = error,
        };
        var json = JsonSerializer.Serialize(row);
        Console.WriteLine(json);
        if (o.Json is not null) File.AppendAllText(o.Json, json + "\n");
    }

    static double? Finite(double x, int digits) => double.IsFinite(x) ? Math.Round(x, digits) : null;

    static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }
}

/// <summary>Device memory in use through the CUDA runtime PyTorch already loaded (NaN on CPU or if not found).</summary>
static class DeviceMemory
{
    public static double UsedBytes(Device device) =>
        device.type == DeviceType.CUDA && Anneal.Training.Memory.DeviceMemory.CudaUsedBytes() is { } used ? used : double.NaN;
}
