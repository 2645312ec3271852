// How much memory the trainer's device has free, and how much the process has used: the inputs of
// the memory model's decision (Core's MemoryModel) and the measurement it is checked against.
// CUDA: cudaMemGetInfo from the CUDA runtime libtorch already loaded (TorchSharp exposes no memory
// statistics). CPU: MemAvailable from /proc/meminfo, peak resident memory from /proc/self/status.
using System.Runtime.InteropServices;
using Anneal.Core.Training;
using Anneal.Training.Model;
using TorchSharp;

namespace Anneal.Training.Memory;

public static class DeviceMemory
{
    /// <summary>Free bytes on the device, or null when they cannot be read.</summary>
    public static long? FreeBytes(torch.Device device) =>
        device.type == DeviceType.CUDA ? CudaFreeBytes() : HostAvailableBytes();

    /// <summary>MemAvailable of /proc/meminfo, in bytes.</summary>
    public static long? HostAvailableBytes() => ReadKilobytes("/proc/meminfo", "MemAvailable:");

    /// <summary>Peak resident set size of this process (VmHWM), in bytes.</summary>
    public static long? PeakResidentBytes() => ReadKilobytes("/proc/self/status", "VmHWM:");

    /// <summary>Current resident set size of this process (VmRSS), in bytes.</summary>
    public static long? ResidentBytes() => ReadKilobytes("/proc/self/status", "VmRSS:");

    static long? ReadKilobytes(string file, string key)
    {
        try
        {
            foreach (var line in File.ReadLines(file))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return null;
    }

    delegate int MemGetInfo(out nuint free, out nuint total);

    static long? CudaFreeBytes()
    {
        foreach (var name in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so" })
        {
            if (!NativeLibrary.TryLoad(name, out var handle)) continue;
            if (!NativeLibrary.TryGetExport(handle, "cudaMemGetInfo", out var address)) continue;
            var getInfo = Marshal.GetDelegateForFunctionPointer<MemGetInfo>(address);
            return getInfo(out var free, out _) == 0 ? (long)free : null;
        }
        return null;
    }

    /// <summary>The memory model's view of a config.json.</summary>
    public static ModelShape Shape(Qwen3Config c) => new(c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads,
        c.NumKeyValueHeads, c.HeadDim, c.IntermediateSize, c.VocabSize, c.TieWordEmbeddings);
}
