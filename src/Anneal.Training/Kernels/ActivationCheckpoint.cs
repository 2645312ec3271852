// Per-block activation checkpointing: keep only a block's input during forward and re-run the
// block in backward. For a decoder layer this trades one extra layer forward for the layer's
// activations (attention and MLP intermediates, ~10–20 × [B, T, H] per layer), which is what lets
// 4B-parameter models or long sequences fit.
//
// Built on a TorchSharp custom autograd function ("reentrant" checkpointing):
//   forward:  y = block(x) under no_grad (TorchSharp's Function.apply), saving x
//   backward: x' = x.detach().requires_grad_(); y' = block(x') under enable_grad;
//             autograd.backward(y', dy) accumulates the block's parameter gradients directly
//             and gives dx = x'.grad.
// The block's trainable parameters are passed as extra inputs so that the node takes part in
// backward even when x needs no gradient (LoRA over frozen embeddings); their gradients arrive
// through the inner backward, so the node returns none for them.
// Randomness (LoRA dropout) is replayed: the re-run must draw the same dropout masks as the forward,
// or the gradients belong to another network. On the CPU the default generator's state is saved
// before the forward and restored around the re-run (then put back), so the run draws exactly what
// it would without checkpointing. TorchSharp exposes no CUDA generator state, so on CUDA the forward
// draws a seed from the CPU generator (no device sync) and seeds the CUDA generator with it before
// the block, and the re-run seeds it again: the same masks in forward and re-run, from a stream
// that differs from the one an unchecked run would draw (each step reseeds, so runs stay
// reproducible).
// Requirement on the block: the only tensor carrying gradient from outside is x. Per-step tensors the block reads (rotary tables,
// masks) are passed as `context` and saved with the node: a closure capturing them would find
// their handles freed by the caller's dispose scope when backward re-runs the block.
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class ActivationCheckpoint
{
    /// <summary>
    /// block(input) without keeping the block's activations for backward.
    /// <paramref name="parameters"/>: the block's parameters (frozen ones are ignored).
    /// The block may only capture tensors that outlive backward; pass per-step tensors (rotary
    /// tables, masks) through the overload with <c>context</c>.
    /// Outside autograd (no_grad, or nothing requires grad) this is just block(input).
    /// </summary>
    public static Tensor Run(Func<Tensor, Tensor> block, Tensor input, IEnumerable<Tensor> parameters) =>
        Run((x, _) => block(x), input, [], parameters);

    /// <summary>
    /// block(input, context) without keeping the block's activations. <paramref name="context"/>:
    /// tensors the block reads that need no gradient (e.g. rotary cos/sin, attention mask); they
    /// are kept for the backward re-run even when the caller's dispose scope has freed its handles,
    /// and the block receives fresh handles to them there.
    /// </summary>
    public static Tensor Run(Func<Tensor, IReadOnlyList<Tensor>, Tensor> block, Tensor input, IReadOnlyList<Tensor> context, IEnumerable<Tensor> parameters)
    {
        var trainable = parameters.Where(p => p.requires_grad).ToList();
        if (!is_grad_enabled() || (!input.requires_grad && trainable.Count == 0))
            return block(input, context);
        if (context.Any(t => t.requires_grad))
            throw new ArgumentException("Checkpoint context tensors must not require grad: only the input carries gradient into a checkpointed block.", nameof(context));
        ReturnedGradients.ReleasePrevious();
        var vars = new object[3 + trainable.Count];
        vars[0] = block;
        vars[1] = context.ToArray();  // not a Tensor: TorchSharp does not treat it as an autograd input
        vars[2] = input;
        for (int i = 0; i < trainable.Count; i++) vars[3 + i] = trainable[i];
        return CheckpointFunction.apply(vars);
    }
}

/// <summary>vars = (block, context tensors, input, trainable parameters...).</summary>
sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
{
    public override string Name => "ActivationCheckpoint";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var block = (Func<Tensor, IReadOnlyList<Tensor>, Tensor>)vars[0];
        var context = (Tensor[])vars[1];
        var input = (Tensor)vars[2];
        // Saved variables hold their own references: context survives the caller's scope.
        ctx.save_for_backward([input, .. context]);
        ctx.save_data("block", block);
        ctx.save_data("input_requires_grad", input.requires_grad);
        ctx.save_data("vars", vars.Length);
        ctx.save_data("random", RandomReplay.Capture(input.device));
        using var scope = NewDisposeScope();
        return block(input, context).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        var block = (Func<Tensor, IReadOnlyList<Tensor>, Tensor>)ctx.get_data("block");
        bool inputRequiresGrad = (bool)ctx.get_data("input_requires_grad");
        int count = (int)ctx.get_data("vars");
        Tensor? gradInput = null;
        using (var random = (RandomReplay)ctx.get_data("random"))
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            using (enable_grad())
            using (random.Replay())
            {
                var x = saved[0].detach().requires_grad_(inputRequiresGrad);
                var y = block(x, saved.GetRange(1, saved.Count - 1));
                autograd.backward([y], [gradOutput]);
                if (inputRequiresGrad) gradInput = x.grad?.MoveToOuterDisposeScope();
            }
        }
        gradOutput.Dispose();
        var grads = new List<Tensor>(count) { null!, null!, ReturnedGradients.Keep(gradInput)! };
        for (int i = 3; i < count; i++) grads.Add(null!);
        return grads;
    }
}

/// <summary>The random-generator position a checkpointed block's forward started from, to replay in its re-run.</summary>
sealed class RandomReplay : IDisposable
{
    readonly Tensor? cpuState;   // CPU: the default generator's full state (a few KB)
    readonly long cudaSeed;      // CUDA: the seed given to the CUDA generator before the block

    RandomReplay(Tensor? cpuState, long cudaSeed) => (this.cpuState, this.cudaSeed) = (cpuState, cudaSeed);

    /// <summary>Call just before the forward runs the block.</summary>
    public static RandomReplay Capture(Device device)
    {
        if (device.type != DeviceType.CUDA)
            return new RandomReplay(get_rng_state().DetachFromDisposeScope(), 0);
        long seed;
        using (var draw = randint(0, long.MaxValue, [1], dtype: ScalarType.Int64)) seed = draw.item<long>();
        cuda.manual_seed(seed);
        return new RandomReplay(null, seed);
    }

    /// <summary>Puts the generator where the forward started; disposing puts the CPU generator back.</summary>
    public IDisposable Replay()
    {
        if (cpuState is null)
        {
            cuda.manual_seed(cudaSeed);
            return new Restore(null);
        }
        var current = get_rng_state().DetachFromDisposeScope();
        set_rng_state(cpuState);
        return new Restore(current);
    }

    public void Dispose() => cpuState?.Dispose();

    sealed class Restore(Tensor? state) : IDisposable
    {
        public void Dispose()
        {
            if (state is null) return;
            set_rng_state(state);
            state.Dispose();
        }
    }
}
