// Side-by-side micro-benchmarks: FlatAdamW vs TorchSharp optim.AdamW step time, and chunked vs
// plain cross-entropy (time and peak memory). Usage (from the repository root):
//   dotnet run -c Release --project bench/Anneal.Bench -- [optim|ce|all] [--device cpu|cuda]
//     [--hidden 256] [--intermediate 768] [--layers 28] [--vocab 151936] [--tokens 1024] [--steps 10]
//   ... -- train --shape qwen3-0.6b|qwen3-1.7b|qwen3-4b|tiny [--mode full|lora|qlora] [--micro 4] [--seq 2048]
//     [--ckpt] [--no-master] [--lean] [--optimizer flat|torch] [--loss chunked|plain] [--device cuda] [--json FILE]  (see TrainBench.cs)
//   ... -- lengths --shape ... [--batching order|padded|bucketed|token_budget|packed] [--micro 4] [--accum 1] [--seq 2048] [--examples 512] [--json FILE]  (LengthsBench.cs)
//   ... -- data [--examples 200000] [--model-dir DIR] [--threads 1,2,N] [--json FILE]  (DataBench.cs: token cache, tokenization, time to first step, host memory)
//   ... -- fits [--seq 2048]  (FitsTable.cs: what fits on which card, from the memory model)
//   ... -- memory --shape ... [--mode full|lora] [--micro 4] [--seq 2048] [--ckpt] [--json FILE]  (MemoryBench.cs; bench/memory-cpu.sh)
//   ... -- parity --model-dir DIR --reference FILE [--dtype float32|bfloat16] --json OUT  (ParityBench.cs)
//   ... -- vl-parity --reference FILE [--dtype float32|bfloat16] --json OUT | --self-check DIR  (VlParityBench.cs, Qwen3-VL)
//   ... -- qlora-memory  (QLoRA vs LoRA vs full, CPU peak memory, ~100M parameters; QloraBench.cs)
//   ... -- qlora-layer [--shape qwen3-8b] [--tokens 8192] [--steps 10] [--device cuda]  (QloraBench.cs)
//   ... -- qlora-fit [--seq 2048]  (which sizes fit which card, from Core's MemoryModel; QloraBench.cs)
// CPU peak memory is the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
// above the resident set before the measurement.
using System.Diagnostics;
using Anneal.Training.Kernels;
using Anneal.Training.Native;
using Anneal.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

var opts = Options.Parse(args);
if (opts.What is "data")
{
    DataBench.Run(opts);   // spawns its own trainer runs
    return;
}
if (opts.What is "fits")
{
    FitsTable.Run(opts);   // the memory model alone: no libtorch needed
    return;
}
NativeLibraries.EnsureTorchLoaded();
var device = opts.Device == "cuda" ? CUDA : CPU;
if (opts.Device == "cuda") torch.InitializeDeviceType(DeviceType.CUDA);
Console.WriteLine($"# Anneal micro-benchmarks: device {opts.Device}, torch threads {torch.get_num_threads()}, {Environment.ProcessorCount} cores");
Console.WriteLine(NativeLibraries.Describe());
if (opts.What is "optim" or "all") OptimizerBench.Run(opts, device);
if (opts.What is "ce" or "all") CrossEntropyBench.Run(opts, device);
if (opts.What is "train") TrainBench.Run(opts, device);
if (opts.What is "lengths") LengthsBench.Run(opts, device);
if (opts.What is "parity") ParityBench.Run(opts, device);
if (opts.What is "vl-parity") VlParityBench.Run(opts, device);
if (opts.What is "qlora-memory") QloraBench.Memory(opts);
if (opts.What is "qlora-layer") QloraBench.Layer(opts, device);
if (opts.What is "qlora-fit") QloraFit.Run(opts);
if (opts.What is "memory") MemoryBench.Run(opts, device);

sealed record Options(string What, string Device, int Hidden, int Intermediate, int Layers, int Vocab, int Tokens, int Steps)
{
    public string Shape { get; init; } = "tiny";
    public string Mode { get; init; } = "full";
    public int Micro { get; init; } = 4;
    public int Seq { get; init; } = 2048;
    public bool Checkpointing { get; init; }
    public string Optimizer { get; init; } = "flat";
    public string Loss { get; init; } = "chunked";
    public string? Json { get; init; }
    public bool MasterWeights { get; init; } = true;
    public bool Lean { get; init; }
    public string Batching { get; init; } = "bucketed";
    public int Examples { get; init; } = 512;
    public string? ModelDir { get; init; }
    public string? Reference { get; init; }
    public string Dtype { get; init; } = "bfloat16";
    public bool MakeTinyModel { get; init; }
    public int Accumulation { get; init; } = 1;
    public string? Threads { get; init; }
    public string? Phase { get; init; }
    public string? SelfCheckDir { get; init; }

    public static Options Parse(string[] args)
    {
        var o = new Options("all", "cpu", 256, 768, 28, 151936, 1024, 10);
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            o = args[i] switch
            {
                "optim" or "ce" or "all" or "train" or "lengths" or "parity" or "qlora-memory" or "qlora-layer" or "qlora-fit" or "memory" or "fits" or "data" or "vl-parity" => o with { What = args[i] },
                "--accum" => o with { Accumulation = int.Parse(Value()) },
                "--threads" => o with { Threads = Value() },
                "--phase" => o with { Phase = Value() },
                "--batching" => o with { Batching = Value() },
                "--examples" => o with { Examples = int.Parse(Value()) },
                "--model-dir" => o with { ModelDir = Value() },
                "--reference" => o with { Reference = Value() },
                "--dtype" => o with { Dtype = Value() },
                "--make-tiny-model" => o with { MakeTinyModel = true },
                "--self-check" => o with { SelfCheckDir = Value() },
                "--shape" => o with { Shape = Value() },
                "--mode" => o with { Mode = Value() },
                "--micro" => o with { Micro = int.Parse(Value()) },
                "--seq" => o with { Seq = int.Parse(Value()) },
                "--ckpt" => o with { Checkpointing = true },
                "--optimizer" => o with { Optimizer = Value() },
                "--loss" => o with { Loss = Value() },
                "--json" => o with { Json = Value() },
                "--no-master" => o with { MasterWeights = false },
                "--lean" => o with { Lean = true },
                "--device" => o with { Device = Value() },
                "--hidden" => o with { Hidden = int.Parse(Value()) },
                "--intermediate" => o with { Intermediate = int.Parse(Value()) },
                "--layers" => o with { Layers = int.Parse(Value()) },
                "--vocab" => o with { Vocab = int.Parse(Value()) },
                "--tokens" => o with { Tokens = int.Parse(Value()) },
                "--steps" => o with { Steps = int.Parse(Value()) },
                _ => throw new ArgumentException($"unknown argument {args[i]}; expected optim|ce|all|train|lengths|parity|vl-parity|qlora-memory|qlora-layer|qlora-fit and options listed at the top of Program.cs"),
            };
        }
        if (o.Device is not ("cpu" or "cuda")) throw new ArgumentException($"--device {o.Device}: expected cpu or cuda");
        return o;
    }
}

static class OptimizerBench
{
    // Qwen3's parameter list per layer (q,k,v,o, q_norm,k_norm, gate,up,down, two layer norms) with
    // a configurable width, plus embedding and final norm: 28 layers give Qwen3-0.6B's 310 tensors.
    static List<(string, Parameter)> Parameters(Options o, Device device, ScalarType dtype)
    {
        int h = o.Hidden, head = Math.Max(8, h / 8);
        var shapes = new List<(string, long[])> { ("embed_tokens.weight", [Math.Min(o.Vocab, 32768), h]) };
        for (int l = 0; l < o.Layers; l++)
        {
            var p = $"layers.{l}.";
            shapes.AddRange([
                (p + "q_proj.weight", [2 * h, h]), (p + "k_proj.weight", [h, h]), (p + "v_proj.weight", [h, h]), (p + "o_proj.weight", [h, 2 * h]),
                (p + "q_norm.weight", [head]), (p + "k_norm.weight", [head]),
                (p + "gate_proj.weight", [o.Intermediate, h]), (p + "up_proj.weight", [o.Intermediate, h]), (p + "down_proj.weight", [h, o.Intermediate]),
                (p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h])]);
        }
        shapes.Add(("norm.weight", [h]));
        return shapes.Select(s => (s.Item1, new Parameter(randn(s.Item2, dtype, device) * 0.02))).ToList();
    }

    static void FillGrads(IEnumerable<Parameter> ps)
    {
        using var noGrad = no_grad();
        foreach (var p in ps)
        {
            if (p.grad is null) p.grad = randn_like(p).DetachFromDisposeScope();
            else p.grad.normal_();
        }
    }

    public static void Run(Options o, Device device)
    {
        Console.WriteLine();
        Console.WriteLine($"## Optimizer step (hidden {o.Hidden}, intermediate {o.Intermediate}, {o.Layers} layers; median of {o.Steps} steps, the two optimizers alternating)");
        Console.WriteLine("| dtype | tensors | parameters | optim.AdamW ms | FlatAdamW ms | speed-up |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var reference = Parameters(o, device, dtype);
            long n = reference.Sum(p => p.Item2.numel());
            FillGrads(reference.Select(p => p.Item2));
            var refOpt = optim.AdamW(reference.Select(p => p.Item2), lr: 1e-4, weight_decay: 0.01);
            var flatParams = Parameters(o, device, dtype);
            var flat = new FlatAdamW(flatParams, weightDecay: 0.01);
            foreach (var g in flat.Groups) g.Grad.normal_();

            // Alternate the two so that load from other processes hits both alike.
            var refTimes = new List<double>();
            var flatTimes = new List<double>();
            for (int i = 0; i < o.Steps + 2; i++)
            {
                double r = Time(() => { using var s = NewDisposeScope(); refOpt.step(); }, device);
                double f = Time(() => flat.Step(1e-4), device);
                if (i >= 2) { refTimes.Add(r); flatTimes.Add(f); }
            }
            double refMs = Median(refTimes), flatMs = Median(flatTimes);
            refOpt.Dispose();
            flat.Dispose();
            foreach (var (_, p) in reference.Concat(flatParams)) p.Dispose();
            Console.WriteLine($"| {dtype} | {reference.Count} | {n / 1e6:F1} M | {refMs:F1} | {flatMs:F1} | {refMs / flatMs:F2}× |");
        }
    }

    static double Time(Action step, Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        var sw = Stopwatch.StartNew();
        step();
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        return sw.Elapsed.TotalMilliseconds;
    }

    static double Median(List<double> xs)
    {
        xs.Sort();
        return xs[xs.Count / 2];
    }
}

static class CrossEntropyBench
{
    public static void Run(Options o, Device device)
    {
        Console.WriteLine();
        Console.WriteLine($"## Cross-entropy forward+backward ({o.Tokens} tokens, hidden {o.Hidden}, vocab {o.Vocab}, fp32)");
        Console.WriteLine($"Full fp32 logits would be {o.Tokens * (double)o.Vocab * 4 / (1 << 20):F0} MiB.");
        Console.WriteLine("| variant | chunk rows | ms | peak extra memory MiB | loss |");
        Console.WriteLine("|---|---|---|---|---|");
        torch.manual_seed(0);
        var hidden = randn([o.Tokens, o.Hidden], device: device).requires_grad_();
        var weight = (randn([o.Vocab, o.Hidden], device: device) * 0.02).requires_grad_();
        var targets = randint(0, o.Vocab, [o.Tokens], device: device);
        long chunk = ChunkedCrossEntropy.DefaultChunkRows(o.Vocab);
        foreach (var (name, rows) in new (string, long)[] { ("chunked", chunk), ("chunked", 128), ("plain", 0) })
        {
            for (int rep = 0; rep < 2; rep++)  // the first run warms up
            {
                hidden.grad = null;
                weight.grad = null;
                GC.Collect();
                GC.WaitForPendingFinalizers();
                var baseline = PeakMemory.Reset(device);
                var sw = Stopwatch.StartNew();
                float loss;
                using (var scope = NewDisposeScope())
                {
                    var l = rows > 0 ? ChunkedCrossEntropy.Sum(hidden, weight, targets, rows) : ChunkedCrossEntropy.PlainSum(hidden, weight, targets);
                    l.backward();
                    loss = l.item<float>();
                }
                double ms = sw.Elapsed.TotalMilliseconds;
                double peak = PeakMemory.Read(device) - baseline;
                if (rep == 1)
                    Console.WriteLine($"| {name} | {(rows > 0 ? rows.ToString() : "-")} | {ms:F0} | {peak / (1 << 20):F0} | {loss:F2} |");
            }
        }
    }
}

static class PeakMemory
{
    // CPU: resets the peak resident set and returns the current one (bytes).
    public static double Reset(Device device)
    {
        if (device.type != DeviceType.CPU) return 0;
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Status("VmRSS:");
    }

    /// <summary>CPU: the resident set now (bytes).</summary>
    public static double Current() => Status("VmRSS:");

    public static double Read(Device device) => device.type == DeviceType.CPU ? Status("VmHWM:") : double.NaN;

    static double Status(string key)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(key, StringComparison.Ordinal));
        return double.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
    }
}
