// Peak device memory of a training job, estimated before any weight is loaded, so the trainer can
// choose activation checkpointing and refuse a job that cannot fit with advice that would help.
//
// What the trainer holds at its peak (the start of backward, every activation still alive):
//   weights        P·e (QLoRA: linear weights in NF4, 4.127 bits each, the rest in e)
//   gradients      Pt·e for the trainable parameters Pt (the flat gradient buffer)
//   optimizer      Exact: 8·Pt fp32 moments + 4·Pt fp32 master (when e < 4); Lean: 2·Pt·e
//                  + 4·Pt fp32 gradient sum across micro-batches (Exact with bf16 weights)
//                  + FlatAdamW's reused fp32 slice scratch
//   activations    what autograd saves per token per decoder layer (counted from Qwen3.cs, bytes,
//                  e = element size, f = 4 for the fp32 copies RMSNorm keeps):
//                    RMSNorm ×2 ........ f·D + 2·e·D each (fp32 input copy, normalised, output)
//                    q: proj + q_norm + rotary ....... f·H·hd + 4·e·H·hd
//                    k: proj + k_norm + rotary ....... f·K·hd + 3·e·K·hd, + e·H·hd repeated to H heads
//                    v repeated to H heads, SDPA output, its contiguous copy for o_proj ... 3·e·H·hd
//                    SDPA log-sum-exp ................ f·H
//                    SwiGLU: gate, silu(gate), up, product ......... 4·e·I
//                  with checkpointing only each layer's input (e·D) is kept, plus one layer's
//                  activations while it is recomputed in backward.
//   loss           chunked cross-entropy: fp32 chunk logits and their gradient (~3·4·C·V), and
//                  for a trainable output weight its fp32 gradient sum plus a cast (4+2e)·V·D
//   workspace      a fixed allowance for the allocator and libraries (CUDA context not included)
// The figures are estimates; bench/README.md compares them with measured peaks.
using Anneal.Core.Contracts;

namespace Anneal.Core.Training;

/// <summary>The shape numbers of a Qwen3 decoder that memory depends on (config.json names in comments).</summary>
public sealed record ModelShape(
    int HiddenSize,            // hidden_size (D)
    int NumHiddenLayers,       // num_hidden_layers (L)
    int NumAttentionHeads,     // num_attention_heads (H)
    int NumKeyValueHeads,      // num_key_value_heads (K)
    int HeadDim,               // head_dim (hd)
    int IntermediateSize,      // intermediate_size (I)
    int VocabSize,             // vocab_size (V)
    bool TieWordEmbeddings)
{
    /// <summary>Weights of the linear projections of one decoder layer (what LoRA/QLoRA target).</summary>
    public long LinearParametersPerLayer =>
        (long)HiddenSize * NumAttentionHeads * HeadDim * 2          // q_proj, o_proj
        + (long)HiddenSize * NumKeyValueHeads * HeadDim * 2          // k_proj, v_proj
        + (long)HiddenSize * IntermediateSize * 3;                   // gate, up, down

    /// <summary>All parameters (embeddings, layers, norms, untied lm_head).</summary>
    public long Parameters
    {
        get
        {
            long embed = (long)VocabSize * HiddenSize;
            long norms = 2L * HiddenSize + 2L * HeadDim;
            return embed * (TieWordEmbeddings ? 1 : 2) + NumHiddenLayers * (LinearParametersPerLayer + norms) + HiddenSize;
        }
    }

    /// <summary>Parameters of LoRA adapters of rank r on the given projections of every layer.</summary>
    public long LoraParameters(int r, IEnumerable<string> targets)
    {
        long q = (long)NumAttentionHeads * HeadDim, kv = (long)NumKeyValueHeads * HeadDim;
        long perLayer = targets.Sum(t => t switch
        {
            "q_proj" => r * (HiddenSize + q),
            "k_proj" or "v_proj" => r * (HiddenSize + kv),
            "o_proj" => r * (q + HiddenSize),
            "gate_proj" or "up_proj" or "down_proj" => (long)r * (HiddenSize + IntermediateSize),
            _ => 0L,
        });
        return perLayer * NumHiddenLayers;
    }

    /// <summary>The published Qwen3 dense shapes (their config.json), for estimates before a model is downloaded.</summary>
    public static readonly IReadOnlyDictionary<string, ModelShape> Qwen3 = new Dictionary<string, ModelShape>(StringComparer.OrdinalIgnoreCase)
    {
        ["Qwen/Qwen3-0.6B"] = new(1024, 28, 16, 8, 128, 3072, 151936, true),
        ["Qwen/Qwen3-1.7B"] = new(2048, 28, 16, 8, 128, 6144, 151936, true),
        ["Qwen/Qwen3-4B"] = new(2560, 36, 32, 8, 128, 9728, 151936, true),
        ["Qwen/Qwen3-8B"] = new(4096, 36, 32, 8, 128, 12288, 151936, false),
        ["Qwen/Qwen3-14B"] = new(5120, 40, 40, 8, 128, 17408, 151936, false),
        ["Qwen/Qwen3-32B"] = new(5120, 64, 64, 8, 128, 25600, 151936, false),
    };
}

/// <summary>How a job would train: what the estimate depends on besides the model's shape.</summary>
public sealed record MemoryPlan
{
    public string Mode { get; init; } = TrainingModes.FullFinetune;
    public LoraSettings Lora { get; init; } = new();
    /// <summary>Bytes per weight element: 2 for bf16 (CUDA), 4 for fp32 (CPU).</summary>
    public int ElementBytes { get; init; } = 2;
    public string OptimizerPrecision { get; init; } = OptimizerPrecisions.Exact;
    public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>Rows of the largest micro-batch and tokens per row (padded length).</summary>
    public int MicroBatchRows { get; init; } = 1;
    public int RowTokens { get; init; } = 2048;
    public bool ActivationCheckpointing { get; init; }
    /// <summary>Rows per loss chunk (ChunkedCrossEntropy: about 256 MiB of fp32 logits).</summary>
    public long LossChunkRows { get; init; }
    /// <summary>Largest slice FlatAdamW updates at once (its scratch buffers).</summary>
    public long OptimizerSliceElements { get; init; } = 1L << 24;
}

public static class OptimizerPrecisions
{
    /// <summary>fp32 moments and master weights.</summary>
    public const string Exact = "exact";
    /// <summary>Moments in the weights' dtype, stochastically rounded weights.</summary>
    public const string Lean = "lean";
    /// <summary>Exact when it fits, else lean.</summary>
    public const string Auto = "auto";
}

/// <summary>An estimate in bytes, by part.</summary>
public sealed record MemoryEstimate(long Weights, long Gradients, long Optimizer, long Activations, long Loss, long Workspace)
{
    public long Peak => Weights + Gradients + Optimizer + Activations + Loss + Workspace;

    public static string Gib(long bytes) => $"{bytes / (double)(1L << 30):F1} GiB";

    public override string ToString() =>
        $"{Gib(Peak)} (weights {Gib(Weights)}, gradients {Gib(Gradients)}, optimizer {Gib(Optimizer)}, activations {Gib(Activations)}, loss {Gib(Loss)}, workspace {Gib(Workspace)})";
}

/// <summary>The trainer's choice for a device of a given capacity.</summary>
public sealed record MemoryDecision(bool Fits, bool ActivationCheckpointing, string OptimizerPrecision, MemoryEstimate Estimate, string? Advice);

public static class MemoryModel
{
    /// <summary>Allocator slack and library workspaces (cuBLAS, SDPA), a fixed allowance.</summary>
    public const long WorkspaceBytes = 256L << 20;
    /// <summary>Bits per NF4 weight with double-quantised block scales (block 64).</summary>
    public const double Nf4BitsPerWeight = 4.127;

    public static MemoryEstimate Estimate(ModelShape m, MemoryPlan p)
    {
        long e = p.ElementBytes;
        const long f = 4;
        long D = m.HiddenSize, L = m.NumHiddenLayers, H = m.NumAttentionHeads, K = m.NumKeyValueHeads, hd = m.HeadDim, I = m.IntermediateSize, V = m.VocabSize;

        var full = p.Mode == TrainingModes.FullFinetune;
        long linear = L * m.LinearParametersPerLayer;
        long weights = p.Mode == TrainingModes.Qlora
            ? (long)(linear * Nf4BitsPerWeight / 8) + (m.Parameters - linear) * e
            : m.Parameters * e;
        long trainable = full ? m.Parameters : m.LoraParameters(p.Lora.R, p.Lora.Targets);
        // LoRA adapters live in the weights' dtype too.
        if (!full) weights += trainable * e;

        long gradients = trainable * e;
        long optimizer = p.OptimizerPrecision == OptimizerPrecisions.Lean || e == 4
            ? (p.OptimizerPrecision == OptimizerPrecisions.Lean ? 2 * trainable * e : 8 * trainable)
            : 12 * trainable;
        // Exact sums bf16 gradients across micro-batches in fp32; Lean accumulates in bf16 as PyTorch does.
        if (e < 4 && p.GradientAccumulationSteps > 1 && p.OptimizerPrecision != OptimizerPrecisions.Lean) optimizer += 4 * trainable;
        long scratchBuffers = p.OptimizerPrecision == OptimizerPrecisions.Lean && e < 4 ? 4 : 2;
        optimizer += scratchBuffers * 4 * Math.Min(p.OptimizerSliceElements, trainable);

        long tokens = (long)p.MicroBatchRows * p.RowTokens;
        long perLayerToken =
            2 * (f * D + 2 * e * D)
            + f * H * hd + 4 * e * H * hd
            + f * K * hd + 3 * e * K * hd + e * H * hd
            + 3 * e * H * hd
            + f * H
            + 4 * e * I;
        long layerActivations = perLayerToken * tokens;
        long activations = p.ActivationCheckpointing
            ? L * e * D * tokens + layerActivations
            : L * layerActivations;
        activations += (f * D + 3 * e * D) * tokens;   // embeddings out, final norm, rows gathered for the loss

        long chunk = Math.Min(tokens, p.LossChunkRows > 0 ? p.LossChunkRows : Math.Max(1, (256L << 20) / (4 * V)));
        long loss = 3 * 4 * chunk * V + (full ? (4 + 2 * e) * V * D : 0);

        return new MemoryEstimate(weights, gradients, optimizer, activations, loss, WorkspaceBytes);
    }

    /// <summary>
    /// Picks activation checkpointing ("auto": off when it fits without) and the optimizer precision
    /// ("auto": exact when it fits, else lean) for a device with <paramref name="capacityBytes"/>
    /// free; a plan that does not fit even then comes back with advice naming what would.
    /// </summary>
    public static MemoryDecision Decide(ModelShape m, MemoryPlan p, string checkpointing, string precision, long capacityBytes)
    {
        var checkpointChoices = checkpointing switch { "on" => new[] { true }, "off" => [false], _ => [false, true] };
        var precisionChoices = precision switch
        {
            OptimizerPrecisions.Exact => new[] { OptimizerPrecisions.Exact },
            OptimizerPrecisions.Lean => [OptimizerPrecisions.Lean],
            _ => [OptimizerPrecisions.Exact, OptimizerPrecisions.Lean],
        };
        MemoryEstimate? smallest = null;
        (bool, string)? smallestChoice = null;
        // Cheapest in compute first: no recompute, then exact state.
        foreach (var c in checkpointChoices)
        foreach (var o in precisionChoices)
        {
            var estimate = Estimate(m, p with { ActivationCheckpointing = c, OptimizerPrecision = o });
            if (estimate.Peak <= capacityBytes) return new MemoryDecision(true, c, o, estimate, null);
            if (smallest is null || estimate.Peak < smallest.Peak) (smallest, smallestChoice) = (estimate, (c, o));
        }
        return new MemoryDecision(false, smallestChoice!.Value.Item1, smallestChoice.Value.Item2, smallest!, Advice(m, p, capacityBytes));
    }

    /// <summary>What would fit on this device, tried in the order a user would change things.</summary>
    static string Advice(ModelShape m, MemoryPlan p, long capacity)
    {
        var leanest = p with { ActivationCheckpointing = true, OptimizerPrecision = OptimizerPrecisions.Lean };
        var options = new List<string>();
        for (var rows = p.MicroBatchRows / 2; rows >= 1; rows /= 2)
            if (Estimate(m, leanest with { MicroBatchRows = rows }).Peak <= capacity)
            {
                options.Add($"per_device_batch {rows} (raise gradient_accumulation_steps to keep the effective batch)");
                break;
            }
        for (var length = p.RowTokens / 2; length >= 256; length /= 2)
            if (Estimate(m, leanest with { MicroBatchRows = 1, RowTokens = length }).Peak <= capacity)
            {
                options.Add($"sequence_length {length} with per_device_batch 1");
                break;
            }
        if (p.Mode == TrainingModes.FullFinetune && Estimate(m, leanest with { Mode = TrainingModes.Lora }).Peak <= capacity)
            options.Add("training.mode \"lora\"");
        if (p.Mode != TrainingModes.Qlora && Estimate(m, leanest with { Mode = TrainingModes.Qlora }).Peak <= capacity)
            options.Add("training.mode \"qlora\"");
        if (options.Count == 0)
        {
            var perGpu = Estimate(m, leanest with { MicroBatchRows = 1 }).Peak;
            options.Add($"a device with at least {MemoryEstimate.Gib(perGpu)} free, or more GPUs");
        }
        return "would fit: " + string.Join("; or ", options);
    }
}
