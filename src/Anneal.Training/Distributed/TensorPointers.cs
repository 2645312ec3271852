// The address of a tensor's first element, for handing TorchSharp tensors to MPI and NCCL.
// TorchSharp exposes no data_ptr; its native bridge exports THSTensor_data(tensor), which returns
// tensor->data_ptr() including a view's offset (SCALEOUT-QLORA.md §A1; THSStorage_data_ptr would
// ignore the offset). The bridge is already loaded by NativeLibraries; this assembly's resolver asks
// TorchSharp's assembly for the same handle.
using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace Anneal.Training.Distributed;

static class TensorPointers
{
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr tensor);

    /// <summary>Address of <paramref name="t"/>'s first element (CPU or device memory).</summary>
    public static IntPtr Of(torch.Tensor t) => THSTensor_data(t.Handle);
}

/// <summary>Resolves this assembly's native imports: TorchSharp's bridge, Open MPI, NCCL and the CUDA runtime.</summary>
static class DistributedLibraries
{
    static readonly object Gate = new();
    static bool installed;
    static readonly Dictionary<string, IntPtr> Extra = new(StringComparer.Ordinal);

    /// <summary>Installs the resolver once; <paramref name="name"/> → <paramref name="handle"/> is added to it.</summary>
    public static void Register(string name, IntPtr handle)
    {
        lock (Gate)
        {
            Extra[name] = handle;
            Install();
        }
    }

    public static void Install()
    {
        lock (Gate)
        {
            if (installed) return;
            NativeLibrary.SetDllImportResolver(typeof(DistributedLibraries).Assembly, Resolve);
            installed = true;
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name == "LibTorchSharp") return NativeLibrary.Load("LibTorchSharp", typeof(torch).Assembly, null);
        lock (Gate) return Extra.TryGetValue(name, out var handle) ? handle : IntPtr.Zero;
    }
}
