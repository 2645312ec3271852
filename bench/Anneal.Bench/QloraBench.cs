// QLoRA against LoRA and full fine-tuning.
//
// `qlora-memory`: peak resident memory on CPU of loading a ~100M-parameter Qwen3-shaped checkpoint
// (bf16 on disk, as Hugging Face ships them) and training 2 steps of 1 × 64 tokens, once per mode,
// each mode in a fresh child process so that one mode's freed memory cannot hide the next one's.
// Figures are VmHWM above the resident set measured just before loading (libtorch and the runtime
// excluded), next to the formula's estimate of weights + gradients + AdamW state:
//   full   16 B/param (fp32 weight, gradient, two moments; FlatAdamW keeps the weight in its buffer)
//   lora    4 B/param + 16 B per adapter parameter
//   qlora   0.516 B per decoder-linear parameter (NF4, 4.127 bits) + 4 B/param for embeddings and
//           norms + 16 B per adapter parameter
// (the CPU trainer computes in fp32; on a GPU the unquantised parts are bf16, 2 B/param).
// Activations (64 tokens) and the one transient dequantised weight are not in the formula.
// glibc's malloc raises its mmap threshold after large frees and then keeps freed blocks in its
// heaps, which would make resident memory say more about the allocator than about the model: the
// children run with MALLOC_MMAP_THRESHOLD_=131072 (fixed), so freed blocks above 128 KiB go back
// to the system in every mode alike.
//
// `qlora-layer`: one decoder layer's 7 projections, forward and backward with input gradients
// (--tokens tokens, LoRA r = 16 on all of them), bf16 base + LoRA vs NF4 base + LoRA, alternating,
// median of --steps; the shape of --shape (qwen3-8b by default). Meant for a GPU; on CPU it only
// shows that the path runs.
using System.Diagnostics;
using System.Text.Json;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Kernels;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

static class QloraBench
{
    /// <summary>~98M parameters: 8 layers of hidden 1024 / intermediate 2816, 16 heads of 64, vocab 8192 (tied).</summary>
    static Qwen3Config MemoryShape() => new()
    {
        VocabSize = 8192, HiddenSize = 1024, IntermediateSize = 2816, NumHiddenLayers = 8,
        NumAttentionHeads = 16, NumKeyValueHeads = 4, HeadDim = 64, RopeTheta = 1000000.0,
        RmsNormEps = 1e-6, TieWordEmbeddings = true, MaxPositionEmbeddings = 4096, TorchDtype = "bfloat16",
    };

    public static void Memory(Options o)
    {
        var folder = Path.Combine(Path.GetTempPath(), "anneal-bench-qlora-100m");
        if (o.Mode is "full" or "lora" or "qlora" && o.ModelDir is { } dir) { MeasureOne(o, dir); return; }

        WriteCheckpoint(folder);
        var cfg = MemoryShape();
        using var meta = new Qwen3ForCausalLM(cfg, META, ScalarType.Float32);
        long total = meta.parameters().Sum(p => p.numel());
        long linear = meta.named_parameters().Where(p => p.name.EndsWith("_proj.weight")).Sum(p => p.parameter.numel());
        long adapters;
        using (var withLora = new Qwen3ForCausalLM(cfg, META, ScalarType.Float32, new LoraSettings()))
            adapters = withLora.named_parameters().Where(p => Lora.IsAdapterParameter(p.name)).Sum(p => p.parameter.numel());
        Console.WriteLine();
        Console.WriteLine($"## Peak memory on CPU: {total / 1e6:F1}M parameters ({linear / 1e6:F1}M in decoder linears), LoRA r=16 on all linears ({adapters / 1e6:F2}M), 2 steps of 1 × 64 tokens, fp32 compute");
        Console.WriteLine("| mode | formula MiB (weights + grads + AdamW) | measured: resident after load MiB | measured: peak MiB | peak / LoRA peak | formula / LoRA formula |");
        Console.WriteLine("|---|---|---|---|---|---|");
        double Formula(string mode) => mode switch
        {
            "full" => 16.0 * total,
            "lora" => 4.0 * total + 16.0 * adapters,
            _ => 4.127 / 8 * linear + 4.0 * (total - linear) + 16.0 * adapters,
        } / (1 << 20);
        var rows = new Dictionary<string, JsonElement>();
        foreach (var mode in new[] { "full", "lora", "qlora" })
            rows[mode] = RunChild(o with { Mode = mode, ModelDir = folder });
        foreach (var mode in new[] { "full", "lora", "qlora" })
        {
            var r = rows[mode];
            Console.WriteLine($"| {mode} | {Formula(mode):F0} | {r.GetProperty("after_load_mib").GetDouble():F0} | {r.GetProperty("peak_mib").GetDouble():F0} | " +
                $"{r.GetProperty("peak_mib").GetDouble() / rows["lora"].GetProperty("peak_mib").GetDouble():F2} | {Formula(mode) / Formula("lora"):F2} |");
        }
    }

    /// <summary>Runs this benchmark again in a child process for one mode; returns its JSON line.</summary>
    static JsonElement RunChild(Options o)
    {
        var self = Environment.ProcessPath!;
        var args = new List<string>();
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") args.Add(System.Reflection.Assembly.GetEntryAssembly()!.Location);
        args.AddRange(["qlora-memory", "--mode", o.Mode, "--model-dir", o.ModelDir!]);
        var start = new ProcessStartInfo(self) { RedirectStandardOutput = true };
        start.Environment["MALLOC_MMAP_THRESHOLD_"] = "131072";
        foreach (var a in args) start.ArgumentList.Add(a);
        using var child = Process.Start(start)!;
        var lines = child.StandardOutput.ReadToEnd().Split('\n');
        child.WaitForExit();
        var json = lines.LastOrDefault(l => l.StartsWith('{'))
            ?? throw new InvalidOperationException($"the {o.Mode} run printed no result (exit {child.ExitCode})");
        return JsonDocument.Parse(json).RootElement;
    }

    static void MeasureOne(Options o, string folder)
    {
        var cfg = ModelFolder.LoadConfig(folder);
        using (var warm = ones(8)) _ = (warm * 2).sum().item<float>();   // libtorch's thread pool and allocator up
        GC.Collect();
        var baseline = PeakMemory.Reset(CPU);
        var lora = o.Mode == "full" ? null : new LoraSettings();
        manual_seed(0);
        using var model = ModelFolder.Load(folder, CPU, ScalarType.Float32, lora, nf4Base: o.Mode == "qlora");
        var afterLoad = PeakMemory.Current() - baseline;
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
        using var optimizer = new FlatAdamW(trainable, weightDecay: 0.01);
        const int T = 64;
        var ids = randint(0, cfg.VocabSize, [1, T]);
        var positions = arange(T).unsqueeze(0);
        var targets = ids.narrow(1, 1, T - 1).reshape(-1);
        float loss = 0;
        var sw = Stopwatch.StartNew();
        for (int step = 0; step < 2; step++)
        {
            using var scope = NewDisposeScope();
            var hidden = model.Hidden(ids, positions, null);
            var sum = ChunkedCrossEntropy.Sum(hidden.narrow(1, 0, T - 1).reshape(-1, cfg.HiddenSize), model.OutputWeight, targets) / (T - 1.0);
            sum.backward();
            optimizer.Step(1e-4);
            optimizer.ZeroGrad();
            loss = sum.item<float>();
        }
        var peak = PeakMemory.Read(CPU) - baseline;
        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["mode"] = o.Mode, ["after_load_mib"] = Math.Round(afterLoad / (1 << 20), 1), ["peak_mib"] = Math.Round(peak / (1 << 20), 1),
            ["step_s"] = Math.Round(sw.Elapsed.TotalSeconds / 2, 2), ["last_loss"] = loss,
        }));
    }

    /// <summary>A bf16 checkpoint of the memory shape, N(0, 0.02) weights and unit norms; written once.</summary>
    static void WriteCheckpoint(string folder)
    {
        if (File.Exists(Path.Combine(folder, ModelFolder.WeightsFile))) return;
        Directory.CreateDirectory(folder);
        var cfg = MemoryShape();
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), JsonSerializer.Serialize(cfg));
        using var shapes = new Qwen3ForCausalLM(cfg, META, ScalarType.Float32);
        var generator = new Generator(1);
        var tensors = shapes.ParameterShapes().Select(s => (s.Name, s.Name.EndsWith("norm.weight")
            ? ones(s.Shape, ScalarType.BFloat16) : (randn(s.Shape, generator: generator) * 0.02).to(ScalarType.BFloat16))).ToList();
        SafetensorsFile.Write(Path.Combine(folder, ModelFolder.WeightsFile), tensors);
        foreach (var (_, t) in tensors) t.Dispose();
    }

    public static void Layer(Options o, Device device)
    {
        var cfg = o.Shape == "tiny" ? TrainBench.Shape("tiny") : LayerShape(o.Shape);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        long d = cfg.HiddenSize, q = cfg.NumAttentionHeads * cfg.HeadDim, kv = cfg.NumKeyValueHeads * cfg.HeadDim, i = cfg.IntermediateSize;
        (long In, long Out)[] shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)];
        var settings = new LoraSettings(R: 16, Alpha: 32);
        manual_seed(0);
        var lora = shapes.Select(s => new LoraLinear(s.In, s.Out, false, settings, device, dtype)).ToList();
        var qlora = shapes.Select(s => new QloraLinear(s.In, s.Out, false, settings, device, dtype)).ToList();
        using (no_grad())
            for (int k = 0; k < shapes.Length; k++)
                qlora[k].LoadBase(lora[k].BaseWeight);
        var inputs = shapes.Select(s => randn([o.Tokens, s.In], dtype, device)).ToList();
        double Run(IReadOnlyList<nn.Module<Tensor, Tensor>> layers)
        {
            Sync(device);
            var sw = Stopwatch.StartNew();
            for (int k = 0; k < layers.Count; k++)
            {
                using var scope = NewDisposeScope();
                var x = inputs[k].detach().requires_grad_(true);
                layers[k].call(x).sum().backward();
            }
            Sync(device);
            return sw.Elapsed.TotalMilliseconds;
        }
        var times = (Lora: new List<double>(), Qlora: new List<double>());
        for (int step = 0; step < o.Steps + 2; step++)
        {
            var a = Run(lora);
            var b = Run(qlora);
            if (step >= 2) { times.Lora.Add(a); times.Qlora.Add(b); }
        }
        double Median(List<double> xs) { xs.Sort(); return xs[xs.Count / 2]; }
        double baseBytes = shapes.Sum(s => (double)s.In * s.Out) * (dtype == ScalarType.BFloat16 ? 2 : 4);
        double nf4Bytes = qlora.Sum(l => (double)l.BaseWeight.Bytes);
        Console.WriteLine();
        Console.WriteLine($"## One {o.Shape} layer's 7 projections, forward + backward, {o.Tokens} tokens, LoRA r=16, {dtype} on {device.type} (median of {o.Steps})");
        Console.WriteLine("| base | ms | ratio | base weights MiB |");
        Console.WriteLine("|---|---|---|---|");
        Console.WriteLine($"| {dtype} + LoRA | {Median(times.Lora):F2} | 1.00 | {baseBytes / (1 << 20):F1} |");
        Console.WriteLine($"| NF4 + LoRA | {Median(times.Qlora):F2} | {Median(times.Qlora) / Median(times.Lora):F2} | {nf4Bytes / (1 << 20):F1} |");
        foreach (var l in lora) l.Dispose();
        foreach (var l in qlora) l.Dispose();
    }

    static Qwen3Config LayerShape(string name) => name switch
    {
        "qwen3-1.7b" => new() { HiddenSize = 2048, IntermediateSize = 6144, NumAttentionHeads = 16, NumKeyValueHeads = 8, HeadDim = 128 },
        "qwen3-8b" => new() { HiddenSize = 4096, IntermediateSize = 12288, NumAttentionHeads = 32, NumKeyValueHeads = 8, HeadDim = 128 },
        "qwen3-32b" => new() { HiddenSize = 5120, IntermediateSize = 25600, NumAttentionHeads = 64, NumKeyValueHeads = 8, HeadDim = 128 },
        _ => throw new ArgumentException($"--shape {name}: expected qwen3-1.7b, qwen3-8b, qwen3-32b or tiny"),
    };

    static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }
}

/// <summary>
/// `qlora-fit`: which Qwen3 sizes fit which card with full fine-tuning, LoRA and QLoRA, from Core's
/// MemoryModel (the estimate the trainer plans with; formula, not measured): bf16, one row of
/// --seq tokens, activation checkpointing on, exact (fp32) optimizer state, LoRA r = 16 on all
/// linears. A card "fits" when the estimate is at most its memory less 1 GiB for the CUDA context.
/// </summary>
static class QloraFit
{
    static readonly (string Name, double Gb)[] Cards = [("24 GB (RTX 4090, L4)", 24), ("48 GB (L40S, A6000)", 48), ("80 GB (A100, H100)", 80), ("141 GB (H200)", 141)];

    public static void Run(Options o)
    {
        Console.WriteLine();
        Console.WriteLine($"## Estimated peak memory (MemoryModel; bf16, 1 × {o.Seq} tokens, activation checkpointing, exact optimizer state, LoRA r=16 all linears) and the smallest card that fits");
        Console.WriteLine("| model | weights bf16 / NF4 GiB | full GiB | LoRA GiB | QLoRA GiB | full fits | LoRA fits | QLoRA fits |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        foreach (var (id, shape) in Anneal.Core.Training.ModelShape.Qwen3)
        {
            var plan = new Anneal.Core.Training.MemoryPlan { ElementBytes = 2, RowTokens = o.Seq, ActivationCheckpointing = true };
            var full = Anneal.Core.Training.MemoryModel.Estimate(shape, plan with { Mode = Anneal.Core.Training.TrainingModes.FullFinetune });
            var lora = Anneal.Core.Training.MemoryModel.Estimate(shape, plan with { Mode = Anneal.Core.Training.TrainingModes.Lora });
            var qlora = Anneal.Core.Training.MemoryModel.Estimate(shape, plan with { Mode = Anneal.Core.Training.TrainingModes.Qlora });
            static double Gib(long b) => b / (double)(1L << 30);
            static string Smallest(long peak) => Cards.FirstOrDefault(c => peak <= (long)(c.Gb * 1e9) - (1L << 30)).Name ?? "none (more GPUs)";
            Console.WriteLine($"| {id} | {Gib(lora.Weights):F1} / {Gib(qlora.Weights):F1} | {Gib(full.Peak):F1} | {Gib(lora.Peak):F1} | {Gib(qlora.Peak):F1} | " +
                $"{Smallest(full.Peak)} | {Smallest(lora.Peak)} | {Smallest(qlora.Peak)} |");
        }
    }
}
