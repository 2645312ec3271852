// Realistic-length throughput through the trainer's own batching and step code, mirroring
// bench/anchor/hf_anchor_lengths.py: 512 examples with lognormal lengths (median 400, sigma 0.8,
// clipped to 32–2048, Python's random.Random(0) reproduced exactly, so both sides train the same
// lengths), the first 30% of each example prompt (no loss), full fine-tune, one warm-up epoch, then
// the same epoch timed. Reported: non-padding tokens per second (the anchor's trained_tokens_per_s),
// padding share, device memory in use after the timed epoch (CUDA) or peak resident set (CPU).
//   --batching order         rows of one example in dataset order, --micro per step (the anchor's default collator)
//   --batching padded        StepPlan: shuffled, --micro rows a micro-batch, --accum micro-batches a step
//   --batching bucketed      StepPlan: the trainer's length bucketing
//   --batching token_budget  StepPlan: padded's steps, each cut into length-sorted micro-batches of at most
//                            --micro × the longest example padded tokens (plain causal attention); "budget" too
//   --batching packed        StepPlan: rows of up to --seq tokens, block-diagonal mask
// Steps go through Trainer.AccumulateGradients (chunked loss over trained rows only) and FlatAdamW.
using System.Diagnostics;
using System.Text.Json;
using Anneal.Training;
using Anneal.Training.Data;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

static class LengthsBench
{
    public static void Run(Options o, Device device)
    {
        var batching = o.Batching == "budget" ? Anneal.Core.Training.BatchingModes.TokenBudget : o.Batching;
        if (batching != "order" && !Anneal.Core.Training.BatchingModes.All.Contains(batching))
            throw new ArgumentException($"--batching {o.Batching}: expected order, {string.Join(", ", Anneal.Core.Training.BatchingModes.All)}");
        var cfg = TrainBench.Shape(o.Shape);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var lengths = AnchorLengths(o.Examples, seed: 0, maxLength: o.Seq);
        var rng = new Random(0);
        var examples = lengths.Select((l, i) =>
        {
            var ids = Enumerable.Range(0, l).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
            var prompt = (int)(0.3 * l);
            return new SftExample(i + 1, ids, Enumerable.Range(0, l).Select(t => t >= Math.Max(1, prompt)).ToArray());
        }).ToList();
        var padId = Math.Min(151643, cfg.VocabSize - 1);

        // One plan, used for the warm-up and the timed epoch alike (as the anchor reuses its batch list).
        IReadOnlyList<List<List<int[]>>> plan = batching switch
        {
            "order" => Enumerable.Range(0, (examples.Count + o.Micro - 1) / o.Micro)
                .Select(s => new List<List<int[]>> { Enumerable.Range(s * o.Micro, Math.Min(o.Micro, examples.Count - s * o.Micro)).Select(i => new[] { i }).ToList() })
                .ToList(),
            _ => StepPlan.Epoch(lengths, seed: 0, epoch: 0, batching, o.Micro, o.Accumulation, o.Seq),
        };

        torch.manual_seed(0);
        using var model = new Qwen3ForCausalLM(cfg, device, dtype, null);
        long nparams = model.parameters().Sum(p => p.numel());
        // Hugging Face's initialisation (normal, std 0.02, for matrices; norms stay 1), so the loss
        // starts near ln(vocab) as in the anchor rather than at TorchSharp's N(0, 1) embedding scale.
        using (no_grad())
            foreach (var p in model.parameters().Where(p => p.dim() >= 2))
                p.normal_(0, 0.02);
        using var optimizer = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: 0.01);
        model.train();

        (long Real, long Padded, long Trained, double LossSum) Epoch()
        {
            long real = 0, padded = 0, trained = 0;
            double lossSum = 0;
            foreach (var step in plan)
            {
                var batches = step.Select(rows => SftData.Collate(examples, rows, padId, device)).ToList();
                try
                {
                    var n = batches.Sum(b => b.TrainedTokens);
                    lossSum += Trainer.AccumulateGradients(model, batches, n);
                    optimizer.Step(1e-5);
                    optimizer.ZeroGrad();
                    real += batches.Sum(b => b.Tokens);
                    padded += batches.Sum(b => b.Ids.numel());
                    trained += n;
                }
                finally { foreach (var b in batches) b.Dispose(); }
            }
            return (real, padded, trained, lossSum);
        }

        string? error = null;
        double seconds = double.NaN, peak = double.NaN;
        (long Real, long Padded, long Trained, double LossSum) timed = default;
        try
        {
            Epoch();   // warm-up: every batch shape seen once
            Sync(device);
            GC.Collect();
            var baseline = PeakMemory.Reset(device);
            var sw = Stopwatch.StartNew();
            timed = Epoch();
            Sync(device);
            seconds = sw.Elapsed.TotalSeconds;
            peak = device.type == DeviceType.CUDA ? DeviceMemory.UsedBytes(device) : PeakMemory.Read(device);
            _ = baseline;
        }
        catch (Exception e) when (Trainer.IsOutOfMemory(e) || e is System.Runtime.InteropServices.ExternalException)
        {
            error = e.Message.Split('\n')[0];
        }
        var rowsTotal = plan.Sum(s => s.Sum(m => m.Count));
        var row = new Dictionary<string, object?>
        {
            ["engine"] = "anneal", ["bench"] = "lengths", ["model"] = o.Shape, ["device"] = device.type.ToString().ToLowerInvariant(),
            ["dtype"] = dtype.ToString(), ["batching"] = batching, ["micro"] = o.Micro, ["accum"] = o.Accumulation, ["seq"] = o.Seq,
            ["examples"] = examples.Count, ["rows"] = rowsTotal, ["steps"] = plan.Count, ["forward_passes"] = plan.Sum(s => s.Count), ["params_b"] = Math.Round(nparams / 1e9, 4),
            ["real_tokens"] = timed.Real, ["padded_tokens"] = timed.Padded, ["loss_tokens"] = timed.Trained,
            ["pad_fraction"] = timed.Padded > 0 ? Math.Round(1 - (double)timed.Real / timed.Padded, 3) : null,
            ["seconds"] = Finite(seconds, 2), ["trained_tokens_per_s"] = Finite(timed.Real / seconds, 0),
            ["mean_step_loss"] = plan.Count > 0 && error is null ? Math.Round(timed.LossSum / plan.Count, 4) : null,
            // CUDA: device memory in use after the timed epoch (total − free); CPU: peak resident set of the process.
            [device.type == DeviceType.CUDA ? "device_used_gib" : "cpu_peak_rss_gib"] = Finite(peak / (1L << 30), 2),
            ["error"] = error,
        };
        var json = JsonSerializer.Serialize(row);
        Console.WriteLine(json);
        if (o.Json is not null) File.AppendAllText(o.Json, json + "\n");
    }

    /// <summary>The anchor's lengths: min(max, max(32, round(exp(gauss(ln 400, 0.8))))) from random.Random(seed).</summary>
    public static int[] AnchorLengths(int n, int seed, int maxLength = 2048)
    {
        var r = new PythonRandom(seed);
        return Enumerable.Range(0, n)
            .Select(_ => (int)Math.Min(maxLength, Math.Max(32, Math.Round(Math.Exp(r.Gauss(Math.Log(400), 0.8)), MidpointRounding.ToEven))))
            .ToArray();
    }

    static double? Finite(double x, int digits) => double.IsFinite(x) ? Math.Round(x, digits) : null;

    static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }
}

/// <summary>
/// CPython's random.Random for an int seed: MT19937 seeded by init_by_array with the seed's 32-bit
/// words, random() = 53-bit double from two outputs, gauss() = the Box–Muller pair CPython caches.
/// </summary>
sealed class PythonRandom
{
    readonly uint[] mt = new uint[624];
    int index = 625;
    double? gaussNext;

    public PythonRandom(int seed)
    {
        var n = (uint)Math.Abs(seed);
        InitByArray([n]);   // a seed below 2^32 is one key word (0 included)
    }

    void InitGenrand(uint s)
    {
        mt[0] = s;
        for (index = 1; index < 624; index++)
            mt[index] = unchecked(1812433253u * (mt[index - 1] ^ (mt[index - 1] >> 30)) + (uint)index);
    }

    void InitByArray(uint[] key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (var k = Math.Max(624, key.Length); k > 0; k--)
        {
            mt[i] = unchecked((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j);
            i++; j++;
            if (i >= 624) { mt[0] = mt[623]; i = 1; }
            if (j >= key.Length) j = 0;
        }
        for (var k = 623; k > 0; k--)
        {
            mt[i] = unchecked((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint)i);
            i++;
            if (i >= 624) { mt[0] = mt[623]; i = 1; }
        }
        mt[0] = 0x80000000u;
    }

    uint Next()
    {
        if (index >= 624)
        {
            for (var k = 0; k < 624; k++)
            {
                var y = (mt[k] & 0x80000000u) | (mt[(k + 1) % 624] & 0x7fffffffu);
                mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908b0dfu : 0u);
            }
            index = 0;
        }
        var x = mt[index++];
        x ^= x >> 11;
        x ^= (x << 7) & 0x9d2c5680u;
        x ^= (x << 15) & 0xefc60000u;
        x ^= x >> 18;
        return x;
    }

    public double NextDouble()
    {
        double a = Next() >> 5, b = Next() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

    public double Gauss(double mu, double sigma)
    {
        var z = gaussNext;
        gaussNext = null;
        if (z is null)
        {
            var x2pi = NextDouble() * 2 * Math.PI;
            var g2rad = Math.Sqrt(-2.0 * Math.Log(1.0 - NextDouble()));
            z = Math.Cos(x2pi) * g2rad;
            gaussNext = Math.Sin(x2pi) * g2rad;
        }
        return mu + z.Value * sigma;
    }
}
