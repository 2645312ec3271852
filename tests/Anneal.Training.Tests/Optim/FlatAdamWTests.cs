// FlatAdamW against TorchSharp's optim.AdamW on CPU, gradient buffers, master weights and checkpoints.
using Anneal.Training.Native;
using Anneal.Training.Optim;
using Anneal.Training.Tests.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Optim;

[Collection(TorchCollection.Name)]
public class FlatAdamWTests
{
    const double WeightDecay = 0.1;

    public FlatAdamWTests() => NativeLibraries.EnsureTorchLoaded();

    // Linear → LayerNorm → Linear: 2-D weights (decay) and 1-D biases/norm weights (no decay).
    // Weights come from a private generator: tests in other classes draw from the global one in parallel.
    static Sequential TinyModel(long seed, ScalarType dtype = ScalarType.Float32)
    {
        var model = nn.Sequential(("up", nn.Linear(8, 16)), ("norm", nn.LayerNorm(16)), ("down", nn.Linear(16, 4)));
        var generator = new Generator((ulong)seed);
        using (no_grad())
            foreach (var p in model.parameters())
                p.copy_((p.dim() == 1 && p.shape[0] == 16 ? 1.0 : 0.0) + 0.3 * randn(p.shape, generator: generator));
        return dtype == ScalarType.Float32 ? model : model.to(dtype);
    }

    static Tensor Loss(Sequential model, Tensor x, Tensor y) => (model.forward(x) - y).square().mean();

    static void AssertClose(Tensor expected, Tensor actual, double atol, string what)
    {
        var diff = (expected.to(ScalarType.Float32) - actual.to(ScalarType.Float32)).abs().max().item<float>();
        Assert.True(diff <= atol, $"{what}: max |diff| {diff} > {atol}");
    }

    [Fact]
    public void Matches_TorchSharp_AdamW_with_decay_groups_over_several_steps()
    {
        using var reference = TinyModel(1);
        using var flat = TinyModel(1);
        var decayed = reference.parameters().Where(p => p.dim() >= 2).ToList();
        var notDecayed = reference.parameters().Where(p => p.dim() < 2).ToList();
        var refOpt = optim.AdamW(
            [new AdamW.ParamGroup(decayed, lr: 1e-2, beta2: 0.95, weight_decay: WeightDecay), new AdamW.ParamGroup(notDecayed, lr: 1e-2, beta2: 0.95, weight_decay: 0)],
            lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8);
        using var opt = new FlatAdamW(flat.named_parameters().Select(p => (p.name, p.parameter)), beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: WeightDecay);

        Assert.Equal(["Float32.cpu.decay", "Float32.cpu.no_decay"], opt.Groups.Select(g => g.Name));
        Assert.Equal(["up.weight", "down.weight"], opt.Groups[0].Layout.Select(l => l.Name));

        var gen = new Generator(7);
        for (int step = 1; step <= 6; step++)
        {
            double lr = 1e-2 * step / 6.0;  // warm-up: lr changes every step
            using var scope = NewDisposeScope();
            var x = randn([32, 8], generator: gen);
            var y = randn([32, 4], generator: gen);

            refOpt.zero_grad();
            Loss(reference, x, y).backward();
            foreach (var g in refOpt.ParamGroups) g.LearningRate = lr;
            refOpt.step();

            opt.ZeroGrad();
            Loss(flat, x, y).backward();
            opt.Step(lr);

            foreach (var ((name, expected), actual) in reference.named_parameters().Zip(flat.parameters()))
                AssertClose(expected, actual, 1e-5, $"step {step} {name}");
        }
        Assert.Equal(6, opt.StepCount);
    }

    [Fact]
    public void Gradients_are_views_of_one_buffer_so_ZeroGrad_is_one_op_per_group()
    {
        using var model = TinyModel(2);
        using var opt = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay);
        var gen = new Generator(3);
        using var x = randn([4, 8], generator: gen);
        using var y = randn([4, 4], generator: gen);

        Loss(model, x, y).backward();
        Assert.All(model.parameters(), p => Assert.True(p.grad!.abs().sum().item<float>() > 0));

        // Writing the flat buffer is visible through every parameter's .grad, and vice versa.
        foreach (var g in opt.Groups) g.Grad.fill_(7);
        Assert.All(model.parameters(), p => Assert.True(p.grad!.eq(7).all().item<bool>()));
        opt.ZeroGrad();
        Assert.All(model.parameters(), p => Assert.Equal(0f, p.grad!.abs().sum().item<float>()));

        // Backward after ZeroGrad accumulates into the same buffer: equal to a fresh model's gradient.
        Loss(model, x, y).backward();
        using var fresh = TinyModel(2);
        Loss(fresh, x, y).backward();
        long total = opt.Groups.Sum(g => g.Numel);
        Assert.Equal(model.parameters().Sum(p => p.numel()), total);
        foreach (var (p, q) in model.parameters().Zip(fresh.parameters()))
            AssertClose(q.grad!, p.grad!, 1e-6, "gradient after ZeroGrad");
        using var flatGrads = cat(opt.Groups.Select(g => g.Grad).ToList(), 0);
        Assert.True(flatGrads.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void Bf16_parameters_follow_fp32_master_weights()
    {
        // Same gradients fed to an fp32 reference AdamW and to FlatAdamW over bf16 parameters.
        using var reference = TinyModel(3, ScalarType.BFloat16).to(ScalarType.Float32);  // bf16-representable start
        using var flat = TinyModel(3, ScalarType.BFloat16);
        var refOpt = optim.AdamW(reference.parameters(), lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: WeightDecay);
        using var opt = new FlatAdamW(flat.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay,
            decay: (_, _) => true);
        Assert.All(opt.Groups, g => Assert.NotNull(g.Master));

        var gen = new Generator(11);
        for (int step = 1; step <= 4; step++)
        {
            using var scope = NewDisposeScope();
            foreach (var (r, f) in reference.parameters().Zip(flat.parameters()))
            {
                var g = randn(f.shape, generator: gen).to(ScalarType.BFloat16);  // exactly representable in fp32
                r.grad = g.to(ScalarType.Float32);
                using (no_grad()) f.grad!.copy_(g);
            }
            refOpt.step();
            opt.Step(1e-2);
        }
        var master = opt.Groups[0].Master!;
        foreach (var (name, offset, numel) in opt.Groups[0].Layout)
        {
            var expected = reference.named_parameters().Single(p => p.name == name).parameter.reshape(-1);
            AssertClose(expected, master.narrow(0, offset, numel), 1e-5, $"master {name}");
            var param = flat.named_parameters().Single(p => p.name == name).parameter.reshape(-1);
            Assert.True(param.equal(master.narrow(0, offset, numel).to(ScalarType.BFloat16)).all().item<bool>(), $"{name} is the bf16 rounding of its master");
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32, OptimizerPrecision.Exact)]
    [InlineData(ScalarType.BFloat16, OptimizerPrecision.Exact)]
    [InlineData(ScalarType.BFloat16, OptimizerPrecision.Lean)]
    public void Save_and_load_continue_identically(ScalarType dtype, OptimizerPrecision precision)
    {
        var path = Path.Combine(Path.GetTempPath(), $"flat-adamw-{Guid.NewGuid():N}.bin");
        try
        {
            using var a = TinyModel(4, dtype);
            using var optA = new FlatAdamW(a.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay, precision: precision);
            var gen = new Generator(5);
            var batches = Enumerable.Range(0, 6).Select(_ => (randn([8, 8], generator: gen).to(dtype), randn([8, 4], generator: gen).to(dtype))).ToList();
            void Train(Sequential m, FlatAdamW o, int from, int to)
            {
                for (int i = from; i < to; i++)
                {
                    o.ZeroGrad();
                    Loss(m, batches[i].Item1, batches[i].Item2).backward();
                    o.Step(3e-3);
                }
            }
            Train(a, optA, 0, 3);
            optA.Save(path);

            // A second model restored from A's weights and the saved optimizer state.
            using var b = TinyModel(99, dtype);
            using (no_grad())
                foreach (var (pb, pa) in b.parameters().Zip(a.parameters())) pb.copy_(pa);
            using var optB = new FlatAdamW(b.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay, precision: precision);
            optB.Load(path);
            Assert.Equal(3, optB.StepCount);

            Train(a, optA, 3, 6);
            Train(b, optB, 3, 6);
            foreach (var ((name, pa), pb) in a.named_parameters().Zip(b.parameters()))
                Assert.True(pa.equal(pb).all().item<bool>(), $"{dtype} {name} differs after resuming");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void StateDict_round_trip_restores_exact_tensors()
    {
        using var a = TinyModel(6);
        using var optA = new FlatAdamW(a.named_parameters().Select(p => (p.name, p.parameter)));
        var gen = new Generator(3);
        using var x = randn([4, 8], generator: gen);
        using var y = randn([4, 4], generator: gen);
        Loss(a, x, y).backward();
        optA.Step(1e-3);

        using var b = TinyModel(6);
        using var optB = new FlatAdamW(b.named_parameters().Select(p => (p.name, p.parameter)));
        var saved = optA.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        optB.LoadStateDict(saved);
        foreach (var (key, t) in optB.StateDict())
            Assert.True(t.equal(saved[key]).all().item<bool>(), key);

        saved.Remove("Float32.cpu.decay.exp_avg");
        var error = Assert.Throws<InvalidDataException>(() => optB.LoadStateDict(saved));
        Assert.Contains("Float32.cpu.decay.exp_avg", error.Message);
    }

    [Fact]
    public void Load_rejects_a_file_that_is_not_optimizer_state()
    {
        var path = Path.Combine(Path.GetTempPath(), $"not-adamw-{Guid.NewGuid():N}.bin");
        File.WriteAllText(path, "hello");
        try
        {
            using var model = TinyModel(8);
            using var opt = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)));
            var error = Assert.Throws<InvalidDataException>(() => opt.Load(path));
            Assert.Contains(path, error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Step_with_max_grad_norm_equals_clipping_the_gradients_first_and_returns_the_norm_before()
    {
        using var a = TinyModel(9);
        using var b = TinyModel(9);
        using var optA = new FlatAdamW(a.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay);
        using var optB = new FlatAdamW(b.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay);
        var gen = new Generator(4);
        using var x = randn([16, 8], generator: gen);
        using var y = randn([16, 4], generator: gen);
        Loss(a, x, y).backward();
        Loss(b, x, y).backward();

        using var expectedNorm = cat(optB.Groups.Select(g => g.Grad).ToList(), 0).norm();
        const double maxNorm = 0.05;
        Assert.True(expectedNorm.item<float>() > 4 * maxNorm, "the test needs gradients that get clipped");
        using (no_grad())
            foreach (var g in optB.Groups) g.Grad.mul_(maxNorm / (expectedNorm.item<float>() + 1e-6));
        optB.Step(1e-2);
        using var norm = optA.Step(1e-2, maxNorm);

        Assert.Equal(expectedNorm.item<float>(), norm.item<float>(), 4);
        foreach (var ((name, pa), pb) in a.named_parameters().Zip(b.parameters()))
            AssertClose(pb, pa, 1e-6, $"{name} after a clipped step");
    }

    [Theory]
    [InlineData(ScalarType.Float32, OptimizerPrecision.Exact)]
    [InlineData(ScalarType.BFloat16, OptimizerPrecision.Exact)]
    [InlineData(ScalarType.BFloat16, OptimizerPrecision.Lean)]
    public void Updating_in_slices_gives_the_same_weights_as_one_pass(ScalarType dtype, OptimizerPrecision precision)
    {
        using var whole = TinyModel(13, dtype);
        using var sliced = TinyModel(13, dtype);
        using var optWhole = new FlatAdamW(whole.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay, precision: precision, seed: 5);
        // 7 does not divide any group's size, so slices straddle parameter boundaries.
        using var optSliced = new FlatAdamW(sliced.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: WeightDecay, precision: precision,
            sliceElements: 7, seed: 5);
        var gen = new Generator(8);
        for (int step = 0; step < 3; step++)
        {
            using var scope = NewDisposeScope();
            var x = randn([8, 8], generator: gen).to(dtype);
            var y = randn([8, 4], generator: gen).to(dtype);
            foreach (var (m, o) in new[] { (whole, optWhole), (sliced, optSliced) })
            {
                o.ZeroGrad();
                Loss(m, x, y).backward();
            }
            optWhole.Step(1e-2);
            optSliced.Step(1e-2);
        }
        foreach (var ((name, pw), ps) in whole.named_parameters().Zip(sliced.parameters()))
        {
            // Lean draws its rounding noise per slice: equal in distribution, not bit for bit.
            if (precision == OptimizerPrecision.Exact)
                Assert.True(pw.equal(ps).all().item<bool>(), $"{dtype} {name}: slicing changed the update");
            else
                AssertClose(pw, ps, 0.02, $"{name} lean sliced vs whole");
        }
        using var normWhole = optWhole.GradNorm();
        using var normSliced = optSliced.GradNorm();
        Assert.Equal(normWhole.item<float>(), normSliced.item<float>(), 3);
    }

    [Fact]
    public void Fp32_accumulation_sums_bf16_micro_batch_gradients_without_bf16_rounding()
    {
        using var model = TinyModel(14, ScalarType.BFloat16);
        using var plain = TinyModel(14, ScalarType.BFloat16);
        using var opt = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), fp32GradAccumulation: true);
        using var optPlain = new FlatAdamW(plain.named_parameters().Select(p => (p.name, p.parameter)));
        Assert.All(opt.Groups, g => Assert.NotNull(g.Accum));
        Assert.All(optPlain.Groups, g => Assert.Null(g.Accum));

        // 16 micro-batches: autograd adds each one's bf16 gradient into .grad.
        var gen = new Generator(15);
        var total = opt.Groups.Select(g => zeros(g.Numel, ScalarType.Float64)).ToList();
        using (no_grad())
            for (int micro = 0; micro < 16; micro++)
            {
                foreach (var ((g, gp), sum) in opt.Groups.Zip(optPlain.Groups).Zip(total))
                {
                    using var grad = (1 + 0.01 * randn(g.Numel, generator: gen)).to(ScalarType.BFloat16);
                    g.Grad.add_(grad);
                    gp.Grad.add_(grad);
                    sum.add_(grad.to(ScalarType.Float64));
                }
                opt.AccumulateMicroBatch();
            }
        using var exact = cat(total, 0).norm().to(ScalarType.Float32);
        using var accumulated = opt.GradNorm();
        using var bf16Sum = optPlain.GradNorm();
        var errorAccumulated = Math.Abs(accumulated.item<float>() - exact.item<float>()) / exact.item<float>();
        var errorBf16 = Math.Abs(bf16Sum.item<float>() - exact.item<float>()) / exact.item<float>();
        Assert.True(errorAccumulated < 1e-6, $"fp32 accumulation: relative norm error {errorAccumulated}");
        Assert.True(errorBf16 > 100 * errorAccumulated, $"bf16 accumulation error {errorBf16} should be far above fp32's {errorAccumulated}");

        opt.ZeroGrad();
        Assert.All(opt.Groups, g => Assert.Equal(0f, g.Accum!.abs().sum().item<float>()));
    }

    [Fact]
    public void Stochastic_rounding_is_unbiased_and_lands_on_the_two_neighbours()
    {
        const int n = 200_000;
        var generator = new Generator(21);
        // (x, lower neighbour, upper neighbour): inside [1, 2) the bf16 spacing is 2^-7; just below 1
        // (toward zero from a power of two) it is 2^-8; negative values mirror.
        (double X, double Lo, double Hi)[] cases =
        [
            (1 + Math.Pow(2, -10), 1, 1 + Math.Pow(2, -7)),
            (1 - Math.Pow(2, -11), 1 - Math.Pow(2, -8), 1),
            (-(1 + 3 * Math.Pow(2, -10)), -(1 + Math.Pow(2, -7)), -1),
            (0.3, 0.298828125, 0.30078125),
        ];
        foreach (var (x, lo, hi) in cases)
        {
            using var values = full(n, x, ScalarType.Float32);
            using var rounded = empty(n, ScalarType.BFloat16);
            StochasticRound.Into(values, rounded, generator);
            using var r = rounded.to(ScalarType.Float64);
            using var atLo = r.eq(lo);
            using var atHi = r.eq(hi);
            Assert.True(atLo.logical_or(atHi).all().item<bool>(), $"{x}: every result is {lo} or {hi}");
            var mean = r.mean().item<double>();
            var p = (x - lo) / (hi - lo);
            var sigma = (hi - lo) * Math.Sqrt(p * (1 - p) / n);
            Assert.True(Math.Abs(mean - x) < 5 * sigma, $"{x}: mean {mean} differs by {Math.Abs(mean - x)} (σ {sigma})");
        }
        using var zeros = torch.zeros(10, ScalarType.Float32);
        using var zerosOut = empty(10, ScalarType.BFloat16);
        StochasticRound.Into(zeros, zerosOut, generator);
        Assert.Equal(0f, zerosOut.abs().sum().to(ScalarType.Float32).item<float>());
    }

    [Fact]
    public void Lean_keeps_bf16_state_and_tracks_fp32_AdamW_where_round_to_nearest_stalls()
    {
        // lr 1e-3 moves weights of size ~1 by less than half a bf16 ulp (2^-8 … 2^-9) a step: rounded
        // to nearest, most updates are lost; stochastically rounded, they add up on average.
        using var reference = TinyModel(16, ScalarType.BFloat16).to(ScalarType.Float32);
        using var lean = TinyModel(16, ScalarType.BFloat16);
        using var nearest = TinyModel(16, ScalarType.BFloat16);
        var refOpt = optim.AdamW(reference.parameters(), lr: 1e-3, weight_decay: 0);
        using var optLean = new FlatAdamW(lean.named_parameters().Select(p => (p.name, p.parameter)), precision: OptimizerPrecision.Lean, seed: 3);
        using var optNearest = new FlatAdamW(nearest.named_parameters().Select(p => (p.name, p.parameter)), fp32MasterWeights: false);
        Assert.All(optLean.Groups, g =>
        {
            Assert.Equal(ScalarType.BFloat16, g.ExpAvg.dtype);
            Assert.Equal(ScalarType.BFloat16, g.ExpAvgSq.dtype);
            Assert.Null(g.Master);
        });

        var gen = new Generator(17);
        for (int step = 0; step < 60; step++)
        {
            using var scope = NewDisposeScope();
            foreach (var ((r, l), q) in reference.parameters().Zip(lean.parameters()).Zip(nearest.parameters()))
            {
                var g = (0.5 + randn(l.shape, generator: gen)).to(ScalarType.BFloat16);   // a steady drift plus noise
                r.grad = g.to(ScalarType.Float32);
                using (no_grad()) { l.grad!.copy_(g); q.grad!.copy_(g); }
            }
            refOpt.step();
            optLean.Step(1e-3);
            optNearest.Step(1e-3);
        }
        double MeanError(Sequential m) => reference.parameters().Zip(m.parameters())
            .Average(p => (p.First - p.Second.to(ScalarType.Float32)).abs().mean().item<float>());
        var leanError = MeanError(lean);
        var nearestError = MeanError(nearest);
        // Documented bound (bench/README.md): after 60 steps the mean |w_lean − w_fp32| stays within
        // one bf16 spacing at |w| ≈ 1 (2^-7), where round-to-nearest has drifted by several.
        Assert.True(leanError < Math.Pow(2, -7), $"lean mean error {leanError}");
        Assert.True(leanError < 0.3 * nearestError, $"lean error {leanError} should be well below round-to-nearest's {nearestError}");
    }

    [Fact]
    public void Parameters_keep_their_values_and_bytes_when_moved_into_the_buffers()
    {
        using var model = TinyModel(12);
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        using var opt = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)));
        foreach (var (p, b) in model.parameters().Zip(before))
        {
            Assert.True(p.equal(b).all().item<bool>());
            Assert.Equal(b.bytes.ToArray(), p.bytes.ToArray());  // what checkpoint writers read
            Assert.True(p.requires_grad);
        }
        // The second parameter of a group starts right after the first in the group's storage.
        Assert.Equal(opt.Groups[0].Layout[1].Offset, opt.Groups[0].Layout[0].Numel);
    }

    [Fact]
    public void Frozen_and_tied_parameters_are_left_out()
    {
        using var model = TinyModel(10);
        var named = model.named_parameters().ToList();
        named[0].parameter.requires_grad = false;
        var withTie = named.Select(p => (p.name, p.parameter)).Append(("tied.weight", named[2].parameter));
        using var opt = new FlatAdamW(withTie);
        Assert.Equal(named.Skip(1).Sum(p => p.parameter.numel()), opt.Groups.Sum(g => g.Numel));
        Assert.DoesNotContain(opt.Groups.SelectMany(g => g.Layout), l => l.Name is "up.weight" or "tied.weight");
    }
}
