// Cross-entropy over a large vocabulary without materialising [tokens × vocab] fp32 logits.
//
// The plain loss keeps logits [N, V] (and their fp32 copy and softmax for backward): for 4 × 2048
// tokens and Qwen3's V = 151,936 that is 5 GB in fp32 per copy. Here the rows are processed in
// chunks of C: forward keeps only the per-row log-sum-exp [N]; backward recomputes each chunk's
// logits and forms the gradient directly:
//   logits_c = h_c · Wᵀ                      [C, V] (fp32 for the softmax)
//   loss     = Σ_valid (lse − logit[target])
//   dlogits  = (softmax(logits_c) − onehot(target)) · valid · dloss      [C, V]
//   dh_c     = dlogits · W                   [C, H]
//   dW      += dlogitsᵀ · h_c                [V, H] (accumulated in fp32)
// Peak extra memory is O(C·V + V·H) instead of O(N·V). The forward takes lse from one fused
// log_softmax pass (lse = logit − log p), which measured faster on CPU than logsumexp.
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Kernels;

public static class ChunkedCrossEntropy
{
    public const long IgnoreIndex = -100;

    /// <summary>Rows per chunk so that one chunk's fp32 logits take about 256 MiB.</summary>
    public static long DefaultChunkRows(long vocab) => Math.Max(1, (256L << 20) / (4 * Math.Max(1, vocab)));

    /// <summary>
    /// Sum over tokens of −log softmax(hidden·weightᵀ)[target], skipping targets equal to -100.
    /// hidden [N, H], weight [V, H] (the lm_head or tied embedding), targets [N] int64.
    /// Returns a 0-d fp32 tensor; the caller divides by the number of trained tokens of the whole
    /// optimizer step. Differentiable with respect to hidden and weight.
    /// </summary>
    public static Tensor Sum(Tensor hidden, Tensor weight, Tensor targets, long chunkRows = 0)
    {
        Validate(hidden, weight, targets);
        if (chunkRows <= 0) chunkRows = DefaultChunkRows(weight.shape[0]);
        ReturnedGradients.ReleasePrevious();
        return ChunkedCrossEntropyFunction.apply(hidden, weight, targets, chunkRows);
    }

    /// <summary>The same loss through full logits (reference for tests and benchmarks).</summary>
    public static Tensor PlainSum(Tensor hidden, Tensor weight, Tensor targets)
    {
        Validate(hidden, weight, targets);
        using var scope = NewDisposeScope();
        var logits = matmul(hidden, weight.t()).to(ScalarType.Float32);
        return nn.functional.cross_entropy(logits, targets, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum)
            .MoveToOuterDisposeScope();
    }

    static void Validate(Tensor hidden, Tensor weight, Tensor targets)
    {
        if (hidden.dim() != 2) throw new ArgumentException($"hidden must be [tokens, hidden_size]; got shape [{string.Join(", ", hidden.shape)}].", nameof(hidden));
        if (weight.dim() != 2 || weight.shape[1] != hidden.shape[1])
            throw new ArgumentException($"weight must be [vocab, {hidden.shape[1]}]; got shape [{string.Join(", ", weight.shape)}].", nameof(weight));
        if (targets.dim() != 1 || targets.shape[0] != hidden.shape[0])
            throw new ArgumentException($"targets must be [{hidden.shape[0]}]; got shape [{string.Join(", ", targets.shape)}].", nameof(targets));
        if (targets.dtype != ScalarType.Int64) throw new ArgumentException($"targets must be int64; got {targets.dtype}.", nameof(targets));
        if (hidden.dtype != weight.dtype) throw new ArgumentException($"hidden ({hidden.dtype}) and weight ({weight.dtype}) must have the same dtype.");
    }
}

/// <summary>Custom autograd function behind ChunkedCrossEntropy.Sum; vars = (hidden, weight, targets, chunkRows).</summary>
sealed class ChunkedCrossEntropyFunction : autograd.SingleTensorFunction<ChunkedCrossEntropyFunction>
{
    public override string Name => "ChunkedCrossEntropy";

    // Runs under no_grad (TorchSharp's Function.apply). Returns the 0-d fp32 loss sum.
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (hidden, weight, targets, chunk) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (long)vars[3]);
        long n = hidden.shape[0];
        var total = zeros([], ScalarType.Float32, hidden.device);
        var lse = empty(n, ScalarType.Float32, hidden.device);  // [N] log-sum-exp, for backward
        // Scalars held for the whole loop: an implicit temporary can be finalized by the GC while the
        // native call still reads it (a rare crash of the test host in toDouble).
        using var zero = 0L.ToScalar();
        for (long start = 0; start < n; start += chunk)
        {
            using var scope = NewDisposeScope();
            long len = Math.Min(chunk, n - start);
            var logits = matmul(hidden.narrow(0, start, len), weight.t()).to(ScalarType.Float32);  // [C, V]
            var t = targets.narrow(0, start, len);
            var valid = t.ne(ChunkedCrossEntropy.IgnoreIndex);
            var index = t.clamp_min(zero).unsqueeze(1);                                            // [C, 1]
            // One fused log_softmax pass; lse = logit − log p at any index, here the target's.
            var logp = logits.log_softmax(1).gather(1, index).squeeze(1);                          // [C]
            lse.narrow(0, start, len).copy_(logits.gather(1, index).squeeze(1) - logp);
            total.sub_((logp * valid).sum());
        }
        ctx.save_for_backward([hidden, weight, targets, lse]);
        ctx.save_data("chunk", chunk);
        ctx.save_data("needs", (hidden.requires_grad, weight.requires_grad));
        return total;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReturnedGradients.ReleasePrevious();
        Tensor? gradHidden = null, gradWeight = null;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (hidden, weight, targets, lse) = (saved[0], saved[1], saved[2], saved[3]);
            long chunk = (long)ctx.get_data("chunk");
            var (needHidden, needWeight) = ((bool, bool))ctx.get_data("needs");
            long n = hidden.shape[0];
            var dloss = gradOutput.to(ScalarType.Float32);
            var gh = needHidden ? empty_like(hidden) : null;
            var gw = needWeight ? zeros(weight.shape, ScalarType.Float32, weight.device) : null;  // [V, H] fp32 sum
            using var zero = 0L.ToScalar();      // held for the loop, as in forward
            using var minusOne = (-1f).ToScalar();
            for (long start = 0; start < n; start += chunk)
            {
                using var chunkScope = NewDisposeScope();
                long len = Math.Min(chunk, n - start);
                var h = hidden.narrow(0, start, len);
                var t = targets.narrow(0, start, len);
                var valid = t.ne(ChunkedCrossEntropy.IgnoreIndex);
                var logits = matmul(h, weight.t()).to(ScalarType.Float32);                        // [C, V]
                var dlogits = logits.sub_(lse.narrow(0, start, len).unsqueeze(1)).exp_();          // softmax
                dlogits.scatter_add_(1, t.clamp_min(zero).unsqueeze(1), full([len, 1], minusOne, ScalarType.Float32, h.device));
                dlogits.mul_((valid.to(ScalarType.Float32) * dloss).unsqueeze(1));
                var d = dlogits.to(hidden.dtype);
                gh?.narrow(0, start, len).copy_(matmul(d, weight));                               // [C, H]
                if (gw is not null)
                {
                    if (d.dtype == ScalarType.Float32) gw.addmm_(d.t(), h);
                    else gw.add_(matmul(d.t(), h));                                                 // [V, H]
                }
            }
            gradHidden = gh?.MoveToOuterDisposeScope();
            gradWeight = gw is null ? null : (gw.dtype == weight.dtype ? gw : gw.to(weight.dtype)).MoveToOuterDisposeScope();
        }
        gradOutput.Dispose();
        return [ReturnedGradients.Keep(gradHidden)!, ReturnedGradients.Keep(gradWeight)!, null!, null!];
    }
}
