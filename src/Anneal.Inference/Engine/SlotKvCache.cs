// Keys and values of every running sequence, preallocated: per layer one (slots·max_len, K, hd)
// tensor, a sequence owning the rows [slot·max_len, slot·max_len + length). A decode step writes
// each sequence's new key/value at its own position (index_copy_) and reads its prefix back
// (index_select), so sequences of different lengths share one batched forward without copying
// whole caches around (a fixed-size version of vLLM's paged cache: one page per sequence).
using static TorchSharp.torch;

namespace Anneal.Inference.Engine;

public sealed class SlotKvCache : IDisposable
{
    public int Slots { get; }
    public int MaxLength { get; }
    public readonly Tensor[] Keys, Values;   // per layer: (Slots·MaxLength, K, hd)
    readonly Stack<int> _free;

    public SlotKvCache(int layers, int slots, int maxLength, int kvHeads, int headDim, Device device, ScalarType dtype)
    {
        Slots = slots;
        MaxLength = maxLength;
        Keys = new Tensor[layers];
        Values = new Tensor[layers];
        for (var l = 0; l < layers; l++)
        {
            Keys[l] = zeros([(long)slots * maxLength, kvHeads, headDim], dtype: dtype, device: device);
            Values[l] = zeros([(long)slots * maxLength, kvHeads, headDim], dtype: dtype, device: device);
        }
        _free = new Stack<int>(Enumerable.Range(0, slots).Reverse());
    }

    /// <summary>Bytes held by the cache: what --max-batch × --max-model-len costs.</summary>
    public static long BytesFor(int layers, int slots, int maxLength, int kvHeads, int headDim, int elementSize) =>
        2L * layers * slots * maxLength * kvHeads * headDim * elementSize;

    public int FreeSlots => _free.Count;
    public int Take() => _free.Pop();
    public void Release(int slot) => _free.Push(slot);

    public void Dispose()
    {
        foreach (var t in Keys) t.Dispose();
        foreach (var t in Values) t.Dispose();
    }
}
