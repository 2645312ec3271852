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
// Requirements on the block: deterministic (no dropout; Qwen3 fine-tuning uses none), and the only
// tensor carrying gradient from outside is x (captured tensors such as rotary tables or masks must
// not require grad).
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class ActivationCheckpoint
{
    /// <summary>
    /// block(input) without keeping the block's activations for backward.
    /// <paramref name="parameters"/>: the block's parameters (frozen ones are ignored).
    /// Outside autograd (no_grad, or nothing requires grad) this is just block(input).
    /// </summary>
    public static Tensor Run(Func<Tensor, Tensor> block, Tensor input, IEnumerable<Tensor> parameters)
    {
        var trainable = parameters.Where(p => p.requires_grad).ToList();
        if (!is_grad_enabled() || (!input.requires_grad && trainable.Count == 0))
            return block(input);
        ReturnedGradients.ReleasePrevious();
        var vars = new object[2 + trainable.Count];
        vars[0] = block;
        vars[1] = input;
        for (int i = 0; i < trainable.Count; i++) vars[2 + i] = trainable[i];
        return CheckpointFunction.apply(vars);
    }
}

/// <summary>vars = (block, input, trainable parameters...).</summary>
sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
{
    public override string Name => "ActivationCheckpoint";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var block = (Func<Tensor, Tensor>)vars[0];
        var input = (Tensor)vars[1];
        ctx.save_for_backward([input]);
        ctx.save_data("block", block);
        ctx.save_data("input_requires_grad", input.requires_grad);
        ctx.save_data("vars", vars.Length);
        using var scope = NewDisposeScope();
        return block(input).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        var block = (Func<Tensor, Tensor>)ctx.get_data("block");
        bool inputRequiresGrad = (bool)ctx.get_data("input_requires_grad");
        int count = (int)ctx.get_data("vars");
        Tensor? gradInput = null;
        using (var scope = NewDisposeScope())
        {
            var input = ctx.get_saved_variables()[0];
            using (enable_grad())
            {
                var x = input.detach().requires_grad_(inputRequiresGrad);
                var y = block(x);
                autograd.backward([y], [gradOutput]);
                if (inputRequiresGrad) gradInput = x.grad?.MoveToOuterDisposeScope();
            }
        }
        gradOutput.Dispose();
        var grads = new List<Tensor>(count) { null!, ReturnedGradients.Keep(gradInput)! };
        for (int i = 2; i < count; i++) grads.Add(null!);
        return grads;
    }
}
