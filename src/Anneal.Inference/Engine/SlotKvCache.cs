// Keys and values of every running sequence, preallocated: per layer one (slots, K, max_len, hd)
// tensor, a sequence owning slot `slot` and, in it, positions [0, length). A forward writes each
// row's new keys/values at their own positions (index_copy_ on the flattened (slots·K·max_len, hd)
// view) and attends over its slot's prefix in place: rows in consecutive slots read
// (B, K, S, hd) as a view of the cache, without a copy (a fixed-size version of vLLM's paged cache:
// one page per sequence). Head-major, so that view's batch and head dimensions merge into one
// batch of matrices, as attention's matrix products want them. Free slots are handed out lowest
// first, which keeps the running sequences in consecutive slots as long as possible.
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

public sealed class SlotKvCache : IDisposable
{
    public int Slots { get; }
    public int MaxLength { get; }
    public readonly Tensor[] Keys, Values;   // per layer: (Slots, K, MaxLength, hd)
    readonly SortedSet<int> _free;

    public SlotKvCache(int layers, int slots, int maxLength, int kvHeads, int headDim, Device device, ScalarType dtype)
    {
        Slots = slots;
        MaxLength = maxLength;
        Keys = new Tensor[layers];
        Values = new Tensor[layers];
        for (var l = 0; l < layers; l++)
        {
            Keys[l] = zeros([slots, kvHeads, maxLength, headDim], dtype: dtype, device: device);
            Values[l] = zeros([slots, kvHeads, maxLength, headDim], dtype: dtype, device: device);
        }
        _free = new SortedSet<int>(Enumerable.Range(0, slots));
    }

    /// <summary>Bytes held by the cache: what --max-batch × --max-model-len costs.</summary>
    public static long BytesFor(int layers, int slots, int maxLength, int kvHeads, int headDim, int elementSize) =>
        2L * layers * slots * maxLength * kvHeads * headDim * elementSize;

    public int FreeSlots => _free.Count;

    /// <summary>The lowest free slot.</summary>
    public int Take()
    {
        var slot = _free.Min;
        if (!_free.Remove(slot)) throw new InvalidOperationException($"all {Slots} KV cache slots are taken");
        return slot;
    }

    public void Release(int slot) => _free.Add(slot);

    public void Dispose()
    {
        foreach (var t in Keys) t.Dispose();
        foreach (var t in Values) t.Dispose();
    }
}
