// kernels: the decoder layer's custom autograd nodes (RMSNorm, rotary, SwiGLU; src/Anneal.Training/
// Kernels) against the same math composed from tensor ops, side by side in one process. A stack of
// the shape's decoder layers (Qwen3's ops: norms, q/k norms, rotary, GQA SDPA, SwiGLU, residuals) is
// run forward and backward on random input; rounds alternate between the two variants. Reported per
// variant: median step time, and (CPU) the peak resident set above the one before the step — the
// activations kept for backward plus backward's transients (weight gradients are the same in both).
// --dtype bfloat16 (default, as training on a GPU) or float32. Run with MALLOC_MMAP_THRESHOLD_=65536
// so that freed tensors leave the resident set at once.
using TorchSharp;
using Anneal.Training.Kernels;
using static TorchSharp.torch;

static class KernelsBench
{
    sealed record LayerWeights(Tensor InNorm, Tensor Q, Tensor K, Tensor V, Tensor O, Tensor QNorm, Tensor KNorm, Tensor PostNorm, Tensor Gate, Tensor Up, Tensor Down)
    {
        public IEnumerable<Tensor> All => [InNorm, Q, K, V, O, QNorm, KNorm, PostNorm, Gate, Up, Down];
    }

    public static void Run(Options o, Device device)
    {
        var c = TrainBench.Shape(o.Shape);
        var dtype = o.Dtype switch
        {
            "float32" => ScalarType.Float32,
            "bfloat16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--dtype {o.Dtype}: expected float32 or bfloat16"),
        };
        int D = c.HiddenSize, H = c.NumAttentionHeads, K = c.NumKeyValueHeads, hd = c.HeadDim, I = c.IntermediateSize, L = c.NumHiddenLayers;
        manual_seed(0);
        Tensor W(long rows, long cols) => (randn(rows, cols, dtype: dtype, device: device) / Math.Sqrt(cols)).requires_grad_();
        Tensor N(long n) => (1 + 0.1 * randn(n, dtype: dtype, device: device)).requires_grad_();
        var layers = Enumerable.Range(0, L).Select(_ => new LayerWeights(N(D), W(H * hd, D), W(K * hd, D), W(K * hd, D), W(D, H * hd),
            N(hd), N(hd), N(D), W(I, D), W(I, D), W(D, I))).ToList();
        long B = o.Micro, T = o.Seq;
        var x0 = randn([B, T, D], dtype: dtype, device: device);
        var positions = arange(T, device: device).unsqueeze(0).expand(B, T);
        var (cos, sin) = Anneal.Training.Model.Rotary.CosSin(positions, hd, c.RopeTheta, dtype);

        Tensor Layer(Tensor x, LayerWeights w, bool custom)
        {
            Func<Tensor, Tensor, Tensor> norm = custom ? (a, b) => RmsNormKernel.Apply(a, b, 1e-6) : (a, b) => RmsNormKernel.Reference(a, b, 1e-6);
            Func<Tensor, Tensor> rope = custom ? a => RotaryKernel.Apply(a, cos, sin) : a => RotaryKernel.Reference(a, cos, sin);
            var n1 = norm(x, w.InNorm);
            var q = rope(norm(nn.functional.linear(n1, w.Q).view(B, T, H, hd), w.QNorm).transpose(1, 2));
            var k = rope(norm(nn.functional.linear(n1, w.K).view(B, T, K, hd), w.KNorm).transpose(1, 2));
            var v = nn.functional.linear(n1, w.V).view(B, T, K, hd).transpose(1, 2);
            if (K != H) { k = k.repeat_interleave(H / K, dim: 1); v = v.repeat_interleave(H / K, dim: 1); }
            var y = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true).transpose(1, 2).reshape(B, T, H * hd);
            var h = x + nn.functional.linear(y, w.O);
            var n2 = norm(h, w.PostNorm);
            var gate = nn.functional.linear(n2, w.Gate);
            var up = nn.functional.linear(n2, w.Up);
            var product = custom ? SwiGluKernel.Apply(gate, up) : SwiGluKernel.Reference(gate, up);
            return h + nn.functional.linear(product, w.Down);
        }

        (double Ms, double PeakMiB) Step(bool custom)
        {
            foreach (var p in layers.SelectMany(l => l.All)) p.grad = null;
            GC.Collect();
            if (device.type == DeviceType.CUDA) cuda.synchronize();
            var baseline = PeakMemory.Reset(device);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                var x = x0.clone().requires_grad_();
                foreach (var w in layers) x = Layer(x, w, custom);
                x.square().mean().backward();
            }
            if (device.type == DeviceType.CUDA) cuda.synchronize();
            var ms = clock.Elapsed.TotalMilliseconds;
            return (ms, (PeakMemory.Read(device) - baseline) / 1048576.0);
        }

        Console.WriteLine($"# kernels: shape {o.Shape} (D {D}, H {H}, K {K}, hd {hd}, I {I}, {L} layers), {B} × {T} tokens, {dtype}, {o.Steps} rounds");
        Step(false); Step(true);   // warm-up
        var results = new Dictionary<bool, List<(double Ms, double Peak)>> { [false] = [], [true] = [] };
        for (var round = 0; round < o.Steps; round++)
            foreach (var custom in round % 2 == 0 ? new[] { false, true } : [true, false])
                results[custom].Add(Step(custom));
        double Median(IEnumerable<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }
        Console.WriteLine("| variant | step ms (median) | peak MiB above start (median) |");
        Console.WriteLine("|---|---|---|");
        foreach (var (custom, name) in new[] { (false, "composed ops (before)"), (true, "custom nodes (after)") })
            Console.WriteLine($"| {name} | {Median(results[custom].Select(r => r.Ms)):F1} | {Median(results[custom].Select(r => r.Peak)):F1} |");
        var (before, after) = (results[false], results[true]);
        Console.WriteLine($"after/before: time {Median(after.Select(r => r.Ms)) / Median(before.Select(r => r.Ms)):F2}×, peak {Median(after.Select(r => r.Peak)) / Median(before.Select(r => r.Peak)):F2}×");
    }
}
