// The CUDA smoke test: a few steps of the tiny model on the GPU give the CPU's fp32 losses within
// bf16 tolerance (Diagnostics/DeviceCheck.cs). Without CUDA it is reported as skipped, with the
// reason; the same comparison of the CPU's own bf16 path runs everywhere, so the harness and its
// tolerance are exercised in CI too.
using Anneal.Training.Diagnostics;
using Anneal.Training.Native;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

/// <summary>A fact that runs only where torch.cuda.is_available(); elsewhere it is skipped, saying why.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        string? reason;
        try
        {
            NativeLibraries.EnsureTorchLoaded();
            reason = TorchSharp.torch.cuda.is_available() ? null : "no CUDA device: torch.cuda.is_available() is false (run on a GPU machine: bench/run-gpu.sh device-check)";
        }
        catch (Exception e) { reason = $"libtorch could not be loaded to look for CUDA: {e.Message}"; }
        if (reason != null) Skip = reason;
    }
}

[Collection(TorchRandomCollection.Name)]
public sealed class CudaSmokeTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-device-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [CudaFact]
    public void The_tiny_model_trains_on_cuda_like_on_the_cpu()
    {
        var result = DeviceCheck.Run("cuda", dir);
        output.WriteLine(result.Report());
        Assert.True(result.Passed, result.Report());
    }

    [Fact]
    public void The_cpu_bf16_path_stays_within_the_device_tolerance()
    {
        _ = TinyFixture.ModelDir;   // libtorch loaded, one thread
        var result = DeviceCheck.Run("cpu", dir, cpuBf16: true);
        output.WriteLine(result.Report());
        Assert.Equal(["full", "lora, checkpointing"], result.Rows.Select(r => r.Name));
        Assert.All(result.Rows, r => Assert.Equal(4, r.Losses.Count));
        Assert.True(result.Passed, result.Report());
        // bf16 really ran: the losses are not fp32's.
        Assert.Contains(result.Rows, r => r.WorstRelativeDifference > 0);
    }

    [Fact]
    public void A_device_that_drifts_fails_the_check()
    {
        var row = new DeviceCheckRow("full", [5.0, 4.0], [5.0, 4.2]);
        Assert.Equal(0.05, row.WorstRelativeDifference, 9);
        Assert.False(new DeviceCheckResult("cuda", "bf16", [row], DeviceCheck.Bf16Tolerance).Passed);
        Assert.False(new DeviceCheckResult("cuda", "bf16", [new DeviceCheckRow("full", [5.0, 4.0], [5.0])], DeviceCheck.Bf16Tolerance).Passed);
        Assert.False(new DeviceCheckResult("cuda", "bf16", [new DeviceCheckRow("full", [5.0], [double.NaN])], DeviceCheck.Bf16Tolerance).Passed);
        Assert.Contains("FAILED", new DeviceCheckResult("cuda", "bf16", [row], DeviceCheck.Bf16Tolerance).Report());
    }
}
