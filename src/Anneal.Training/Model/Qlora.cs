// QLoRA (Dettmers et al. 2023) for nn.Linear, as torchtune's LoRALinear(quantize_base=True) and PEFT
// over bitsandbytes' Linear4bit compute it:
//   y = deq(W0)·x + b + (α/r)·B·A·dropout(x)
// W0 (out, in) is frozen and held only in NF4 (0.516 bytes per weight, Quantization/Nf4.cs); the
// autograd node of the base keeps only the packed weight (Kernels/Nf4Linear.cs). A and B are
// ordinary trainable linears in the model's dtype, initialised and named exactly as in LoraLinear
// (`q_proj.lora_A.weight`), so QLoRA writes the same PEFT adapter as LoRA. A projection that LoRA
// does not target keeps its frozen NF4 base and no adapters: in QLoRA mode every decoder linear is
// quantised, embeddings, lm_head and norms are not.
using Anneal.Core.Training;
using Anneal.Training.Kernels;
using Anneal.Training.Quantization;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Anneal.Training.Model;

public sealed class QloraLinear : nn.Module<Tensor, Tensor>
{
    public readonly double Scaling;        // α / r
    readonly double dropout;
    readonly ScalarType dtype;             // compute dtype: the dequantised base takes the input's, merges this one
    Nf4Weight weight;                      // W0 (out, in) in NF4; not a parameter (frozen, not in state dicts)
    [ComponentName(Name = "bias")] readonly Parameter? bias;      // (out) or absent, frozen
    [ComponentName(Name = "lora_A")] readonly Linear? loraA;     // (r, in) when targeted
    [ComponentName(Name = "lora_B")] readonly Linear? loraB;     // (out, r)

    /// <param name="lora">adapters on top when set; null: a frozen NF4 linear only.</param>
    public QloraLinear(long inFeatures, long outFeatures, bool hasBias, LoraSettings? lora, Device? device, ScalarType dtype) : base(nameof(QloraLinear))
    {
        this.dtype = dtype;
        // Zeros until a checkpoint's weight is quantised into it (ModelFolder), so building the model
        // never holds a full-precision copy of the base.
        weight = Nf4Weight.Zeros([outFeatures, inFeatures], device ?? CPU);
        if (hasBias) bias = new Parameter(zeros(outFeatures, dtype: dtype, device: device), requires_grad: false);
        if (lora != null)
        {
            Scaling = lora.Alpha / lora.R;
            dropout = lora.Dropout;
            loraA = nn.Linear(inFeatures, lora.R, hasBias: false, device: device, dtype: dtype);   // Kaiming-uniform (a = √5), as PEFT
            loraB = nn.Linear(lora.R, outFeatures, hasBias: false, device: device, dtype: dtype);
            using (no_grad()) nn.init.zeros_(loraB.weight);
        }
        RegisterComponents();
    }

    public Nf4Weight BaseWeight => weight;
    public bool HasAdapters => loraA is not null;
    public Tensor A => loraA?.weight ?? throw new InvalidOperationException("this NF4 linear has no LoRA adapters");
    public Tensor B => loraB?.weight ?? throw new InvalidOperationException("this NF4 linear has no LoRA adapters");

    /// <summary>Quantises a checkpoint's (out, in) weight into the base, on the base's device.</summary>
    public void LoadBase(Tensor w)
    {
        if (!w.shape.SequenceEqual(weight.Shape))
            throw new ArgumentException($"weight has shape [{string.Join(", ", w.shape)}]; this layer needs [{string.Join(", ", weight.Shape)}].", nameof(w));
        using var scope = NewDisposeScope();
        var onDevice = w.device == weight.Device ? w : w.to(weight.Device);
        var quantised = Nf4.Quantize(onDevice);
        weight.Dispose();
        weight = quantised;
    }

    /// <summary>x (…, in) → (…, out).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = Nf4Linear.Apply(x, weight);
        if (bias is not null) y = y + bias;
        if (loraA is not null)
        {
            var d = training && dropout > 0 ? nn.functional.dropout(x, dropout, training: true) : x;
            y = y + loraB!.call(loraA.call(d)) * Scaling;
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>deq(W0) + (α/r)·B·A in the model's dtype (computed in float32): the base with the adapter folded in.</summary>
    public Tensor MergedWeight()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = weight.Dequantize(ScalarType.Float32);
        if (loraA is not null)
            w.add_(B.to(ScalarType.Float32).matmul(A.to(ScalarType.Float32)) * Scaling);    // (out, in)
        return w.to(dtype).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) weight.Dispose();
        base.Dispose(disposing);
    }
}
