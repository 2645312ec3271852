// The inference process behind /v1 (DESIGN §1: the control plane never loads libtorch). Started
// on the first /v1 request that needs a model, as `<trainer command> inference run --urls
// http://127.0.0.1:0` with a fresh random key in ANNEAL_INFERENCE_KEY (only this server can call
// it), on the CPU (CUDA_VISIBLE_DEVICES="") or on the GPU of ServerOptions.InferenceGpu: always
// when that GPU is not one of --gpus, else only while GPU deployments hold it (InferenceDevices
// moves it with UseGpuAsync, which stops a process on the other device). Its first stdout line says where it listens; its log goes to
// <data-dir>/inference.log. If it dies, the next request starts a new one. Stopped with the server
// (SIGTERM, then killed); its stdin is a pipe from this process, so it also ends if the server dies.
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Anneal.Server.Storage;

namespace Anneal.Server.Inference;

/// <summary>Where to send /v1 requests: the inference process's base URL and its key.</summary>
public sealed record InferenceEndpoint(string Url, string Key);

public sealed class InferenceSupervisor(ServerOptions options, Db db, ILogger<InferenceSupervisor> log) : IAsyncDisposable
{
    readonly SemaphoreSlim _gate = new(1, 1);
    Process? _process;
    InferenceEndpoint? _endpoint;
    // The GPU the next process starts on (null: the CPU). A GPU of --gpus is the scheduler's until
    // a deployment takes it, so the process starts on the CPU then.
    string? _gpu = options.InferenceGpu is { } g && !options.Gpus.Contains(g) ? g : null;

    /// <summary>The GPU the inference process runs on (or starts on next), or null for the CPU.</summary>
    public string? Gpu => _gpu;

    /// <summary>The pid of the running inference process, or null.</summary>
    public int? ProcessId => _process is { HasExited: false } p ? p.Id : null;

    public async Task<InferenceEndpoint> EnsureRunningAsync(CancellationToken ct)
    {
        if (options.InferenceUrl is { } external) return new InferenceEndpoint(external.TrimEnd('/'), options.InferenceKey ?? "");
        await _gate.WaitAsync(ct);
        try
        {
            if (_process is { HasExited: false } && _endpoint is not null) return _endpoint;
            if (options.TrainerCommand.Count == 0)
                throw new InferenceUnavailableException("this server has no command to start the inference process (ServerOptions.TrainerCommand is empty)");
            _process?.Dispose();
            var key = "ank_inf_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
            var psi = new ProcessStartInfo(options.TrainerCommand[0])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
                WorkingDirectory = db.DataDir,
            };
            foreach (var a in options.TrainerCommand.Skip(1)) psi.ArgumentList.Add(a);
            foreach (var a in new[] { "inference", "run", "--urls", "http://127.0.0.1:0", "--max-batch", options.InferenceMaxBatch.ToString(),
                         "--device", _gpu is null ? "cpu" : "cuda" })
                psi.ArgumentList.Add(a);
            psi.Environment["CUDA_VISIBLE_DEVICES"] = _gpu ?? "";
            psi.Environment["ANNEAL_INFERENCE_KEY"] = key;
            var process = new Process { StartInfo = psi };
            try { process.Start(); }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                throw new InferenceUnavailableException($"could not start the inference process '{string.Join(' ', options.TrainerCommand)} inference run': {e.Message}");
            }
            var logPath = Path.Combine(db.DataDir, "inference.log");
            _ = Task.Run(async () =>
            {
                await using var logFile = new StreamWriter(new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
                while (await process.StandardError.ReadLineAsync() is { } line) await logFile.WriteLineAsync(line);
            }, CancellationToken.None);

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(60));
            string? url = null;
            try
            {
                while (url is null && await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
                    if (line.StartsWith('{') && JsonNode.Parse(line) is JsonObject o && o["event"]?.GetValue<string>() == "listening")
                        url = o["url"]!.GetValue<string>();
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
            if (url is null)
            {
                if (!process.HasExited) process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None);
                throw new InferenceUnavailableException($"the inference process did not start (exit code {process.ExitCode}); see {logPath}");
            }
            // Keep draining stdout so the process never blocks on a full pipe.
            _ = process.StandardOutput.BaseStream.CopyToAsync(Stream.Null, CancellationToken.None);
            log.LogInformation("Inference process {Pid} listening on {Url}", process.Id, url);
            _process = process;
            return _endpoint = new InferenceEndpoint(url, key);
        }
        finally { _gate.Release(); }
    }

    /// <summary>
    /// Runs the inference process on this GPU (null: the CPU) from now on: a process running on the
    /// other device is stopped (it has left the device when this returns); the next request starts one here.
    /// </summary>
    public async Task UseGpuAsync(string? gpu)
    {
        await _gate.WaitAsync();
        try
        {
            if (_gpu == gpu) return;
            _gpu = gpu;
            await StopLockedAsync();
        }
        finally { _gate.Release(); }
    }

    /// <summary>Stops the inference process (SIGTERM, killed after the grace period); the next request starts a new one.</summary>
    public async Task StopAsync()
    {
        await _gate.WaitAsync();
        try { await StopLockedAsync(); }
        finally { _gate.Release(); }
    }

    async Task StopLockedAsync()
    {
        if (_process is not { } p) return;
        _process = null;
        _endpoint = null;
        if (!p.HasExited)
        {
            Native.Kill(p.Id, Native.SigTerm);
            using var grace = new CancellationTokenSource(options.CancelGracePeriod);
            try { await p.WaitForExitAsync(grace.Token); }
            catch (OperationCanceledException)
            {
                p.Kill(entireProcessTree: true);
                await p.WaitForExitAsync(CancellationToken.None);
            }
        }
        p.Dispose();
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}

/// <summary>No inference process can answer (not startable, or it crashed): a 503 for the caller.</summary>
public sealed class InferenceUnavailableException(string message) : Exception(message);
