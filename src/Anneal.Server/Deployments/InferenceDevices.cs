// Which device the one inference process runs on, decided by the deployments and shared with the
// scheduler (JobScheduler owns the GPUs of --gpus):
//   no --inference-gpu           → the CPU; "gpu" deployments are refused (422).
//   --inference-gpu N, N not in --gpus → GPU N, always (set aside for inference); "cpu" deployments are refused (422).
//   --inference-gpu N, N in --gpus     → shared with training: the CPU until a "gpu" deployment
//     takes GPU N from the jobs' pool (refused, 409 device_busy, while a running job holds it: a
//     deployment never waits for a job, nor a job for a deployment it was not queued behind); the
//     process moves to GPU N while "gpu" deployments are loading or ready, and when the last one
//     stops or fails it leaves the GPU (the process is stopped) before the GPU goes back to the jobs.
//     The process runs on one device at a time, so "cpu" and "gpu" deployments do not run together (409).
// Every decision runs under one gate with the deployments table, so two requests never both move the process.
using System.Data.Common;
using Anneal.Core.Contracts;
using Anneal.Server.Inference;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Deployments;

/// <summary>Why a deployment cannot have the device it asked for: 422 (never on this server) or 409 (not now).</summary>
public sealed record DeviceRefusal(int Status, string Detail, string Reason);

public sealed class InferenceDevices(ServerOptions options, Db db, JobScheduler scheduler, InferenceSupervisor supervisor)
{
    readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>The inference GPU is one of --gpus: the scheduler lends it to deployments.</summary>
    public bool Shared => options.InferenceGpu is { } g && options.Gpus.Contains(g);

    /// <summary>A deployment's device when it names none: "gpu" when this server has an inference GPU.</summary>
    public string DefaultDevice => options.InferenceGpu is null ? "cpu" : "gpu";

    /// <summary>Serialises deployment changes: create, stop, a finished load.</summary>
    public async Task<IDisposable> LockAsync(CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        return new Releaser(_gate);
    }

    sealed class Releaser(SemaphoreSlim gate) : IDisposable
    {
        int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) gate.Release(); }
    }

    /// <summary>Under <see cref="LockAsync"/>: makes `device` the inference process's device for a new deployment, or says why not.</summary>
    public async Task<DeviceRefusal?> AcquireAsync(DbConnection conn, string device)
    {
        if (device == "gpu" && options.InferenceGpu is null)
            return new(422, "this server runs inference on the CPU",
                "no GPU is set aside for inference: start the server with `anneal serve --inference-gpu N` (N may also be in --gpus: training and deployments then take turns on it)");
        if (device == "cpu" && options.InferenceGpu is { } only && !Shared)
            return new(422, "this server runs inference on the GPU",
                $"the inference process runs on GPU {only}; ask for \"gpu\" or leave device out");
        if (!Shared) return null;
        var gpu = options.InferenceGpu!;
        var active = ActiveDevices(conn);
        if (active.Count > 0 && !active.Contains(device))
            return new(409, $"the inference process runs on the {(device == "gpu" ? "CPU" : $"GPU {gpu}")} for other deployments",
                $"the inference process runs on one device at a time; stop the {(device == "gpu" ? "cpu" : "gpu")} deployments first, or ask for \"{(device == "gpu" ? "cpu" : "gpu")}\"");
        if (device == "cpu" || active.Contains("gpu")) return null;
        if (!scheduler.TryTakeGpu(gpu))
            return new(409, $"GPU {gpu} is training a job",
                $"a running training job holds GPU {gpu}; deploy once it has ended (queued jobs wait while a deployment holds the GPU), or ask for \"device\": \"cpu\"");
        await supervisor.UseGpuAsync(gpu);
        return null;
    }

    /// <summary>
    /// Under <see cref="LockAsync"/>, after a deployment stopped or failed: when no "gpu" deployment
    /// is left, the inference process leaves the shared GPU, which then goes back to the jobs.
    /// </summary>
    public async Task ReleaseUnusedAsync(DbConnection conn)
    {
        if (!Shared || supervisor.Gpu is null || ActiveDevices(conn).Contains("gpu")) return;
        await supervisor.UseGpuAsync(null);
        scheduler.ReturnGpu(options.InferenceGpu!);
    }

    /// <summary>At start, before jobs run: "gpu" deployments left loading or ready hold the shared GPU again.</summary>
    public void Restore()
    {
        if (!Shared || db.Shared) return;
        using var conn = db.Connect();
        if (!ActiveDevices(conn).Contains("gpu")) return;
        if (scheduler.TryTakeGpu(options.InferenceGpu!)) supervisor.UseGpuAsync(options.InferenceGpu).GetAwaiter().GetResult();
    }

    /// <summary>Devices of the deployments loading or ready, of every organisation (they share the process).</summary>
    static HashSet<string> ActiveDevices(DbConnection conn) =>
        [.. Db.Query(conn, null, "SELECT DISTINCT device FROM deployments WHERE status IN ('loading', 'ready')", r => r.GetString(0))];
}
