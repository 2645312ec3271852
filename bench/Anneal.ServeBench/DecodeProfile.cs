// `--profile`: where a decode step's time goes, at 1 row and at N rows, without the server.
// Times BatchedDecoder.Forward (one new token per row after a prompt of --prompt-tokens) and,
// separately on the same weights and cache, the pieces such a step is made of: the projections'
// matrix products alone, the attention over the cache, the norms/rotary/residual element-wise
// work, and the output projection with the host copy of the logits. Each figure is the fastest of
// --reps repetitions (the least disturbed by other work on a shared machine), in milliseconds per
// decode step (all layers); with --cpu-time, the process's CPU time instead of wall time.
using System.Diagnostics;
using System.Globalization;
using Anneal.Inference.Engine;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

static class DecodeProfile
{
    public static void Run(string dir, int rows, int promptTokens, int reps, bool cpuTime)
    {
        CpuTime = cpuTime;
        using var model = ModelFolder.Load(dir, CPU, ScalarType.Float32);
        model.eval();
        var c = model.Config;
        var decoder = new BatchedDecoder(model);
        using var cache = new SlotKvCache(c.NumHiddenLayers, rows, 512, c.NumKeyValueHeads, c.HeadDim, CPU, ScalarType.Float32);
        var weights = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        Console.WriteLine($"decode step profile: prompt {promptTokens} tokens, fastest of {reps}, {(CpuTime ? "CPU" : "wall")} ms per step (all {c.NumHiddenLayers} layers)");
        Console.WriteLine("| rows | full step | projections (matmul) | before: gather K/V | before: GQA repeat | before: SDPA | now: grouped SDPA on the cache | norms, rotary, residual | logits + host copy |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        Tensor W(int l, string m) => weights[$"model.layers.{l}.{m}.weight"];
        string[] fromHidden = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"];
        double Projections(int B)
        {
            var (xD, xI, xA) = (randn(B, 1, c.HiddenSize), randn(B, 1, c.IntermediateSize), randn(B, 1, c.NumAttentionHeads * c.HeadDim));
            return Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++)
                {
                    foreach (var m in fromHidden) nn.functional.linear(xD, W(l, m));
                    nn.functional.linear(xA, W(l, "self_attn.o_proj"));
                    nn.functional.linear(xI, W(l, "mlp.down_proj"));
                }
            });
        }
        Console.WriteLine("projections alone (ms per step) at " + string.Join(", ", new[] { 1, 2, 4, 8, 16 }.Select(b => string.Create(CultureInfo.InvariantCulture, $"{b} rows {Projections(b):F1}"))));
        if (Environment.GetEnvironmentVariable("PROFILE_PROJECTIONS_ONLY") == "1") return;
        foreach (var B in new[] { 1, rows })
        {
            using var noGrad = no_grad();
            var batch = Enumerable.Range(0, B).Select(b => new BatchRow(b, 0, null)).ToList();
            var prompts = Enumerable.Range(0, B).Select(b => Enumerable.Range(0, promptTokens).Select(t => (long)((t * 7 + b) % c.VocabSize)).ToArray()).ToList();
            decoder.Forward(prompts, batch, cache).Dispose();
            var cached = promptTokens;
            var full = Fastest(reps, () =>
            {
                var step = Enumerable.Range(0, B).Select(b => new BatchRow(b, cached, null)).ToList();
                using var logits = decoder.Forward(Enumerable.Range(0, B).Select(b => new[] { (long)b }).ToList(), step, cache);
                using var host = logits.cpu();
                _ = host.data<float>().ToArray();
            }, after: () => cached++);

            // The same shapes as the step, on the same weights.
            int H = c.NumAttentionHeads, K = c.NumKeyValueHeads, hd = c.HeadDim, S = cached + 1, L = cache.MaxLength;
            var xD = randn(B, 1, c.HiddenSize);
            var xI = randn(B, 1, c.IntermediateSize);
            var xA = randn(B, 1, H * hd);
            var matmul = Projections(B);
            // Attention over the cache as the decoder did before: gather each row's prefix from a
            // (slots·L, K, hd) cache, repeat keys/values H/K times, SDPA with a (B, 1, 1, S) mask.
            var flatKeys = randn(B * L, K, hd);
            var flatValues = randn(B * L, K, hd);
            var read = tensor(Enumerable.Range(0, B).SelectMany(b => Enumerable.Range(0, S).Select(s => (long)b * L + s)).ToArray());
            var mask = ones(B, 1, 1, S, dtype: ScalarType.Bool);
            var q = randn(B, H, 1, hd);
            var gather = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++)
                {
                    flatKeys.index_select(0, read).view(B, S, K, hd).transpose(1, 2);
                    flatValues.index_select(0, read).view(B, S, K, hd).transpose(1, 2);
                }
            });
            var k = flatKeys.index_select(0, read).view(B, S, K, hd).transpose(1, 2);
            var v = flatValues.index_select(0, read).view(B, S, K, hd).transpose(1, 2);
            var repeat = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++)
                {
                    k.repeat_interleave(H / K, dim: 1);
                    v.repeat_interleave(H / K, dim: 1);
                }
            });
            var kr = k.repeat_interleave(H / K, dim: 1);
            var vr = v.repeat_interleave(H / K, dim: 1);
            var sdpa = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++) nn.functional.scaled_dot_product_attention(q, kr, vr, mask);
            });
            // As the decoder does now: the G query heads of each key/value head as G query rows,
            // over a view of the head-major (slots, K, L, hd) cache.
            var headMajorKeys = randn(B, K, L, hd);
            var headMajorValues = randn(B, K, L, hd);
            var grouped = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++)
                    nn.functional.scaled_dot_product_attention(q.reshape(B, K, H / K, hd), headMajorKeys.narrow(2, 0, S), headMajorValues.narrow(2, 0, S), mask);
            });
            var norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, CPU, ScalarType.Float32);
            var headNorm = new RmsNorm(hd, c.RmsNormEps, CPU, ScalarType.Float32);
            var (cos, sin) = Rotary.CosSin(full_like(ones(B, 1, dtype: ScalarType.Int64), S), hd, c.RopeTheta, ScalarType.Float32);
            var elementwise = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                var h = xD;
                for (var l = 0; l < c.NumHiddenLayers; l++)
                {
                    norm.call(h);
                    Rotary.Apply(headNorm.call(q), cos, sin);
                    Rotary.Apply(headNorm.call(k.narrow(2, 0, 1)), cos, sin);
                    h = h + xD;
                    norm.call(h);
                    nn.functional.silu(xI).mul(xI);
                    h = h + xD;
                }
            });
            var logitsTime = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                using var host = model.Logits(norm.call(xD.view(B, -1))).cpu();
                _ = host.data<float>().ToArray();
            });
            var transposed = Enumerable.Range(0, c.NumHiddenLayers).Select(l => new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.o_proj", "mlp.down_proj" }
                .Select(m => W(l, m).t().contiguous()).ToArray()).ToArray();
            var matmulT = Fastest(reps, () =>
            {
                using var scope = NewDisposeScope();
                for (var l = 0; l < c.NumHiddenLayers; l++)
                {
                    for (var m = 0; m < 5; m++) xD.matmul(transposed[l][m]);
                    xA.matmul(transposed[l][5]);
                    xI.matmul(transposed[l][6]);
                }
            });
            Console.WriteLine($"  (projections as x·Wᵀ with Wᵀ stored (in, out): {matmulT:F1} ms)");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {B} | {full:F1} | {matmul:F1} | {gather:F1} | {repeat:F1} | {sdpa:F1} | {grouped:F1} | {elementwise:F1} | {logitsTime:F1} |"));
        }
    }

    /// <summary>Measure the process's CPU time instead of wall time: with one torch thread, the work
    /// a piece does, whatever else the machine runs (with more threads it includes their spin-waits).</summary>
    public static bool CpuTime;

    // clock_gettime(CLOCK_PROCESS_CPUTIME_ID): nanoseconds, where Process.TotalProcessorTime counts 10 ms ticks.
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGetTime(int clock, out TimeSpec time);

    struct TimeSpec { public long Seconds, Nanoseconds; }

    static double ProcessCpuMs()
    {
        const int ProcessCpuTimeClock = 2;
        if (ClockGetTime(ProcessCpuTimeClock, out var t) != 0) throw new InvalidOperationException("clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
        return t.Seconds * 1e3 + t.Nanoseconds / 1e6;
    }

    static double Fastest(int reps, Action body, Action? after = null)
    {
        static double Now() => CpuTime ? ProcessCpuMs() : Stopwatch.GetTimestamp() * 1000.0 / Stopwatch.Frequency;
        body();   // warm-up
        after?.Invoke();
        var times = new double[reps];
        for (var i = 0; i < reps; i++)
        {
            var start = Now();
            body();
            times[i] = Now() - start;
            after?.Invoke();
        }
        return times.Min();
    }
}
