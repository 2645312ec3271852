// AdamW over flat buffers: one step is a handful of whole-buffer ops per group instead of
// TorchSharp optim.AdamW's ~8 small kernels per parameter tensor (≈ 39 ms of a 228 ms
// Qwen3-0.6B step on an H100). Update rule as in PyTorch's AdamW (decoupled weight decay):
//   w ← w·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   w ← w − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)
//
// Parameters are grouped by (dtype, device, decay). Each group owns
//   data [n]  the parameters' storage: every parameter is re-pointed (set_) at a slice of it
//   grad [n]  every parameter's .grad is a view of it, so ZeroGrad is one fill per group and
//             autograd accumulates in place into it (AccumulateGrad adds into a defined .grad)
//   m, v [n]  moments: fp32 (Exact) or the parameters' dtype (Lean)
//   master [n] fp32 copy of data for bf16/fp16 parameters (Exact, optional)
//   accum [n] fp32 gradient sum across micro-batches for bf16/fp16 parameters (optional)
// No weight decay on 1-D parameters (norm weights, biases).
//
// Memory per trainable bf16 parameter (bytes): Exact 2 data + 2 grad + 8 moments + 4 master = 16
// (+4 with fp32 accumulation); Lean 2 + 2 + 4 = 8, what PyTorch's AdamW over bf16 parameters
// keeps. The update never allocates a full-size temporary: it walks each group in slices of at
// most SliceElements with scratch buffers reused across slices and steps, and clipping is a
// coefficient folded into the update (no separate pass that rescales the gradients).
//
// Lean rounds the updated weights to bf16 stochastically (unbiased: E[round(x)] = x), so updates
// smaller than half a bf16 ulp still move the weights on average instead of being lost, which is
// what an fp32 master copy otherwise buys; moments are rounded to nearest.
//
// Construct it after the model is on its device and its weights are loaded; afterwards do not
// set .grad to null (module.zero_grad() may) or move the model, which would detach parameters
// from the buffers. Call SyncMasterWeights() if weights are changed in place later.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Anneal.Training.Optim;

/// <summary>How much optimizer state is kept per parameter (see the file header).</summary>
public enum OptimizerPrecision
{
    /// <summary>fp32 moments and fp32 master weights: equal to torch.optim.AdamW in fp32.</summary>
    Exact,
    /// <summary>Moments in the parameters' dtype and stochastically rounded weights: half the state of Exact for bf16.</summary>
    Lean,
}

public sealed class FlatAdamW : IDisposable
{
    const string FileMagic = "anneal.flat_adamw.v1";
    /// <summary>Default slice length of the update: 16 Mi elements (64 MiB per fp32 scratch buffer).</summary>
    public const long DefaultSliceElements = 1L << 24;

    readonly List<FlatGroup> groups = [];
    readonly double beta1, beta2, eps, weightDecay;
    readonly long sliceElements;
    readonly ulong seed;
    // Reused fp32 scratch per device: [0] gradient, [1] denominator, [2] and [3] Lean's fp32 moments.
    readonly Dictionary<string, Tensor[]> scratch = [];

    public OptimizerPrecision Precision { get; }

    /// <summary>Number of optimizer steps taken (Adam's t).</summary>
    public long StepCount { get; private set; }
    public IReadOnlyList<FlatGroup> Groups => groups;

    /// <param name="parameters">Named parameters; frozen ones (requires_grad false) and repeats of a tied parameter are skipped.</param>
    /// <param name="fp32MasterWeights">Exact only: keep an fp32 copy of non-fp32 parameters and update that (recommended for bf16).</param>
    /// <param name="decay">Which parameters get weight decay; default: those with 2 or more dimensions.</param>
    /// <param name="precision">Exact (fp32 state) or Lean (state in the parameters' dtype, stochastic rounding).</param>
    /// <param name="fp32GradAccumulation">Sum non-fp32 gradients across micro-batches in fp32: call AccumulateMicroBatch after each backward.</param>
    /// <param name="sliceElements">Largest slice the update works on at once (bounds the scratch memory).</param>
    /// <param name="seed">Seed of the stochastic rounding (Lean); step t uses seed + t, so a resumed run rounds alike.</param>
    public FlatAdamW(IEnumerable<(string Name, Parameter Param)> parameters, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weightDecay = 0.0, bool fp32MasterWeights = true, Func<string, Parameter, bool>? decay = null,
        OptimizerPrecision precision = OptimizerPrecision.Exact, bool fp32GradAccumulation = false,
        long sliceElements = DefaultSliceElements, ulong seed = 0)
    {
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "expected 0 ≤ beta1 < 1");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "expected 0 ≤ beta2 < 1");
        if (eps <= 0) throw new ArgumentOutOfRangeException(nameof(eps), eps, "expected eps > 0");
        if (weightDecay < 0) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "expected weight_decay ≥ 0");
        if (sliceElements < 1) throw new ArgumentOutOfRangeException(nameof(sliceElements), sliceElements, "expected at least 1");
        (this.beta1, this.beta2, this.eps, this.weightDecay) = (beta1, beta2, eps, weightDecay);
        (Precision, this.sliceElements, this.seed) = (precision, sliceElements, seed);
        decay ??= (_, p) => p.dim() >= 2;

        var seen = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        var members = new Dictionary<string, List<(string, Parameter)>>();
        var order = new List<(string Key, ScalarType Dtype, Device Device, bool Decay)>();
        foreach (var (name, p) in parameters)
        {
            if (!p.requires_grad || !seen.Add(p)) continue;
            if (!p.is_floating_point()) throw new ArgumentException($"Parameter {name} has dtype {p.dtype}; expected a floating-point parameter.");
            bool d = decay(name, p);
            var key = $"{p.dtype}.{p.device}.{(d ? "decay" : "no_decay")}";
            if (!members.TryGetValue(key, out var list))
            {
                members[key] = list = [];
                order.Add((key, p.dtype, p.device, d));
            }
            list.Add((name, p));
        }
        if (order.Count == 0) throw new ArgumentException("FlatAdamW got no trainable parameters.");
        var lean = precision == OptimizerPrecision.Lean;
        foreach (var (key, dtype, device, d) in order)
        {
            var reduced = dtype != ScalarType.Float32;
            groups.Add(new FlatGroup(key, dtype, device, d, members[key],
                master: !lean && fp32MasterWeights && reduced,
                momentDtype: lean ? dtype : ScalarType.Float32,
                accumulate: fp32GradAccumulation && reduced));
        }
    }

    /// <summary>One AdamW update with learning rate <paramref name="lr"/> for this step, without clipping. No host sync.</summary>
    public void Step(double lr) => Update(lr, coef: null);

    /// <summary>
    /// One AdamW update with the gradients clipped to a global L2 norm of at most
    /// <paramref name="maxGradNorm"/> (the clip is a factor inside the update). Returns the norm
    /// before clipping as a 0-d fp32 tensor on the parameters' device; read it only when logging
    /// (.item() syncs). No host sync.
    /// </summary>
    public Tensor Step(double lr, double maxGradNorm)
    {
        using var scope = NewDisposeScope();
        var norm = GradNorm();
        var coef = double.IsPositiveInfinity(maxGradNorm) ? null : (maxGradNorm / (norm + 1e-6)).clamp_max(1.0);
        Update(lr, coef);
        return norm.MoveToOuterDisposeScope();
    }

    void Update(double lr, Tensor? coef)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(beta1, StepCount);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, StepCount));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var g in groups)
        {
            var lean = g.ExpAvg.dtype != ScalarType.Float32;
            var buffers = Scratch(g.Device, lean ? 4 : 2);
            var groupCoef = coef?.to(g.Device);
            var generator = lean ? new Generator(seed + (ulong)StepCount, g.Device) : null;
            for (long offset = 0; offset < g.Numel; offset += sliceElements)
            {
                using var slice = NewDisposeScope();
                var n = Math.Min(sliceElements, g.Numel - offset);
                var grad = GradSlice(g, offset, n, buffers[0]);
                if (groupCoef is not null) grad.mul_(groupCoef);
                var m = g.ExpAvg.narrow(0, offset, n);
                var v = g.ExpAvgSq.narrow(0, offset, n);
                var denom = buffers[1].narrow(0, 0, n);
                if (!lean)
                {
                    var w = (g.Master ?? g.Data).narrow(0, offset, n);
                    if (g.Decay && weightDecay > 0) w.mul_(1 - lr * weightDecay);
                    m.lerp_(grad, 1 - beta1);
                    v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
                    denom.copy_(v).sqrt_().div_(bc2Sqrt).add_(eps);
                    w.addcdiv_(m, denom, -lr / bc1);
                    if (g.Master is not null) g.Data.narrow(0, offset, n).copy_(w);
                }
                else
                {
                    // Moments updated in fp32 and stored rounded to nearest; the weight in fp32,
                    // stored stochastically rounded. The gradient buffer is reused for the weight.
                    var m32 = buffers[2].narrow(0, 0, n).copy_(m).lerp_(grad, 1 - beta1);
                    var v32 = buffers[3].narrow(0, 0, n).copy_(v).mul_(beta2).addcmul_(grad, grad, 1 - beta2);
                    m.copy_(m32);
                    v.copy_(v32);
                    denom.copy_(v32).sqrt_().div_(bc2Sqrt).add_(eps);
                    var data = g.Data.narrow(0, offset, n);
                    var w32 = grad.copy_(data);
                    if (g.Decay && weightDecay > 0) w32.mul_(1 - lr * weightDecay);
                    w32.addcdiv_(m32, denom, -lr / bc1);
                    StochasticRound.Into(w32, data, generator!);
                }
            }
            generator?.Dispose();
        }
    }

    /// <summary>The slice's gradient (the fp32 micro-batch sum plus what is still in .grad) in fp32 scratch.</summary>
    static Tensor GradSlice(FlatGroup g, long offset, long n, Tensor buffer)
    {
        var grad = buffer.narrow(0, 0, n).copy_(g.Grad.narrow(0, offset, n));
        if (g.Accum is not null) grad.add_(g.Accum.narrow(0, offset, n));
        return grad;
    }

    /// <summary>Global L2 norm of the gradients as a 0-d fp32 tensor on the first group's device, read slice by slice.</summary>
    public Tensor GradNorm()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = groups[0].Device;
        var sumSq = zeros([], ScalarType.Float32, device);
        foreach (var g in groups)
        {
            var buffer = Scratch(g.Device, 2)[0];
            for (long offset = 0; offset < g.Numel; offset += sliceElements)
            {
                using var slice = NewDisposeScope();
                var grad = GradSlice(g, offset, Math.Min(sliceElements, g.Numel - offset), buffer);
                sumSq.add_(grad.dot(grad).to(device));
            }
        }
        return sumSq.sqrt_().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// With fp32 gradient accumulation: adds this micro-batch's gradients into the fp32 sum and
    /// zeroes .grad for the next backward. Call it after each micro-batch's backward (calling it
    /// after the last one is optional: the update adds what is left in .grad). No-op otherwise.
    /// </summary>
    public void AccumulateMicroBatch()
    {
        using var noGrad = no_grad();
        foreach (var g in groups)
        {
            if (g.Accum is null) continue;
            g.Accum.add_(g.Grad);
            g.Grad.zero_();
        }
    }

    /// <summary>Zeroes every gradient: one fill per group (the .grad of each parameter is a view of it).</summary>
    public void ZeroGrad()
    {
        foreach (var g in groups)
        {
            g.Grad.zero_();
            g.Accum?.zero_();
        }
    }

    Tensor[] Scratch(Device device, int count)
    {
        var key = device.ToString();
        if (!scratch.TryGetValue(key, out var buffers) || buffers.Length < count)
        {
            if (buffers is not null) foreach (var b in buffers) b.Dispose();
            var length = Math.Min(sliceElements, groups.Where(g => g.Device.ToString() == key).Max(g => g.Numel));
            buffers = Enumerable.Range(0, count).Select(_ => empty(length, ScalarType.Float32, device).DetachFromDisposeScope()).ToArray();
            scratch[key] = buffers;
        }
        return buffers;
    }

    /// <summary>Bytes of optimizer-owned memory beyond the parameters themselves: gradients, moments, master weights, accumulators, scratch.</summary>
    public long StateBytes()
    {
        long Bytes(Tensor? t) => t is null ? 0 : t.numel() * t.ElementSize;
        return groups.Sum(g => Bytes(g.Grad) + Bytes(g.ExpAvg) + Bytes(g.ExpAvgSq) + Bytes(g.Master) + Bytes(g.Accum))
               + scratch.Values.Sum(bs => bs.Sum(b => Bytes(b)));
    }

    /// <summary>Copies the parameters into the fp32 master weights (after changing weights in place).</summary>
    public void SyncMasterWeights()
    {
        using var noGrad = no_grad();
        foreach (var g in groups) g.Master?.copy_(g.Data);
    }

    /// <summary>
    /// The optimizer state as named tensors (shared with the optimizer, not copies):
    /// "step" (int64 0-d), and per group "&lt;group&gt;.exp_avg", ".exp_avg_sq", ".master" (if any),
    /// where group is e.g. "Float32.cpu.decay".
    /// </summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var state = new Dictionary<string, Tensor> { ["step"] = tensor(StepCount) };
        foreach (var g in groups)
        {
            state[g.Name + ".exp_avg"] = g.ExpAvg;
            state[g.Name + ".exp_avg_sq"] = g.ExpAvgSq;
            if (g.Master is not null) state[g.Name + ".master"] = g.Master;
        }
        return state;
    }

    /// <summary>Restores a StateDict() of an optimizer over the same parameters (exact copies).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        using var noGrad = no_grad();
        var expected = StateDict();
        var missing = expected.Keys.Where(k => !state.ContainsKey(k)).ToList();
        var extra = state.Keys.Where(k => !expected.ContainsKey(k)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new InvalidDataException($"Optimizer state does not match the parameters: missing [{string.Join(", ", missing)}], unexpected [{string.Join(", ", extra)}].");
        foreach (var (key, target) in expected)
        {
            if (key == "step") continue;
            var source = state[key];
            if (source.numel() != target.numel())
                throw new InvalidDataException($"Optimizer state {key} has {source.numel()} elements; expected {target.numel()}.");
            target.copy_(source.reshape(target.shape));
        }
        StepCount = state["step"].item<long>();
        foreach (var g in groups)
            if (g.Master is not null) g.Data.copy_(g.Master);
    }

    /// <summary>Writes the state to <paramref name="path"/> (TorchSharp tensor format, with a layout header).</summary>
    public void Save(string path)
    {
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream);
        writer.Write(FileMagic);
        writer.Write(StepCount);
        writer.Write(groups.Count);
        foreach (var g in groups)
        {
            writer.Write(g.Name);
            writer.Write(g.Numel);
            writer.Write(g.Master is not null);
            g.ExpAvg.Save(writer);
            g.ExpAvgSq.Save(writer);
            g.Master?.Save(writer);
        }
    }

    /// <summary>Reads a file written by Save for the same parameters; errors name the file and the mismatch.</summary>
    public void Load(string path)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream);
        using var noGrad = no_grad();
        string magic;
        try { magic = reader.ReadString(); }
        catch (Exception e) when (e is EndOfStreamException or IOException) { magic = ""; }
        if (magic != FileMagic) throw new InvalidDataException($"{path}: not a FlatAdamW state file (expected header \"{FileMagic}\").");
        long step = reader.ReadInt64();
        int count = reader.ReadInt32();
        if (count != groups.Count) throw new InvalidDataException($"{path}: {count} parameter groups; this optimizer has {groups.Count}.");
        foreach (var g in groups)
        {
            var name = reader.ReadString();
            long numel = reader.ReadInt64();
            bool master = reader.ReadBoolean();
            if (name != g.Name || numel != g.Numel || master != (g.Master is not null))
                throw new InvalidDataException($"{path}: group {name} ({numel} elements, master {master}); expected {g.Name} ({g.Numel} elements, master {g.Master is not null}).");
            g.ExpAvg.Load(reader);
            g.ExpAvgSq.Load(reader);
            g.Master?.Load(reader);
            if (g.Master is not null) g.Data.copy_(g.Master);
        }
        StepCount = step;
    }

    public void Dispose()
    {
        foreach (var g in groups) g.Dispose();
        groups.Clear();
        foreach (var b in scratch.Values.SelectMany(b => b)) b.Dispose();
        scratch.Clear();
    }
}

/// <summary>The parameters of one (dtype, device, decay) group laid out in flat buffers.</summary>
public sealed class FlatGroup : IDisposable
{
    public string Name { get; }
    public ScalarType Dtype { get; }
    public Device Device { get; }
    public bool Decay { get; }
    public long Numel { get; }
    /// <summary>(name, offset, numel) of each parameter inside the buffers.</summary>
    public IReadOnlyList<(string Name, long Offset, long Numel)> Layout { get; }

    /// <summary>[Numel] storage of the group's parameters.</summary>
    public Tensor Data { get; }
    /// <summary>[Numel] storage of the group's gradients (each parameter's .grad is a view of it).</summary>
    public Tensor Grad { get; }
    /// <summary>[Numel] first and second moments (fp32, or the parameters' dtype with Lean).</summary>
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }
    /// <summary>[Numel] fp32 master weights, for non-fp32 parameters when enabled.</summary>
    public Tensor? Master { get; }
    /// <summary>[Numel] fp32 sum of earlier micro-batches' gradients, for non-fp32 parameters when enabled.</summary>
    public Tensor? Accum { get; }

    internal FlatGroup(string name, ScalarType dtype, Device device, bool decay, List<(string Name, Parameter Param)> parameters,
        bool master, ScalarType momentDtype, bool accumulate)
    {
        (Name, Dtype, Device, Decay) = (name, dtype, device, decay);
        Numel = parameters.Sum(p => p.Param.numel());
        var layout = new List<(string, long, long)>();
        using var noGrad = no_grad();
        // Long-lived: kept out of any dispose scope the caller may have open.
        Data = empty(Numel, dtype, device).DetachFromDisposeScope();
        Grad = zeros(Numel, dtype, device).DetachFromDisposeScope();
        long offset = 0;
        foreach (var (pname, p) in parameters)
        {
            long n = p.numel();
            using var dataSlice = Data.narrow(0, offset, n);
            dataSlice.copy_(p.reshape(n));
            using var dataView = dataSlice.view(p.shape);
            p.set_(dataView);
            // The parameter keeps its own reference to each view; our wrappers can go.
            using var gradSlice = Grad.narrow(0, offset, n);
            using var gradView = gradSlice.view(p.shape);
            p.grad = gradView;
            layout.Add((pname, offset, n));
            offset += n;
        }
        Layout = layout;
        ExpAvg = zeros(Numel, momentDtype, device).DetachFromDisposeScope();
        ExpAvgSq = zeros(Numel, momentDtype, device).DetachFromDisposeScope();
        Master = master ? Data.to(ScalarType.Float32).DetachFromDisposeScope() : null;
        Accum = accumulate ? zeros(Numel, ScalarType.Float32, device).DetachFromDisposeScope() : null;
    }

    public void Dispose()
    {
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
        Master?.Dispose();
        Accum?.Dispose();
        // Data and Grad stay alive through the parameters that view them; drop our references only.
        Data.Dispose();
        Grad.Dispose();
    }
}
