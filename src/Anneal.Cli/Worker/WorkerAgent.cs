// `anneal worker`: runs jobs of a server on this host. One loop per GPU (or one on the CPU) claims a
// job over /api/workers (offering the other free GPUs too, so a job asking for several takes them
// and runs as that many ranks under mpirun), fetches its dataset (kept by sha256 in the work folder's cache), finds the
// base model (models folder, Hugging Face cache, else the server's copy, else the Hub), the https images the server stored
// with the dataset, downloads the checkpoint to resume
// from when the server has one (checked against the sha256 the server sends; a mismatch abandons
// the claim), then runs the same trainer process `anneal serve` runs. Trainer
// stdout lines go to the server as they come; a saved checkpoint is uploaded (tar, sha256-checked)
// before its line is sent, the final model before the exit. Downloads and uploads resume where a
// broken connection left them (WorkerTransfers). A heartbeat renews the lease; when the
// server answers 409 lease_lost (the job was recovered elsewhere, or cancelled) the trainer is
// stopped and nothing more is sent. A worker that dies simply stops renewing: the server re-queues
// the job from its last uploaded checkpoint. On start the worker registers its slots (name, GPU
// type, one GPU per slot or the CPU, slot count), against which job creation checks [compute].
using System.Diagnostics;
using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Core.Vision;
using Anneal.Server.Workers;

namespace Anneal.Cli.Worker;

public sealed record WorkerSettings(Uri Server, string Token, string Name, IReadOnlyList<string?> Slots, string? GpuType, string WorkDir, string? ModelsDir,
    bool AllowModelDownload, bool ExitWhenIdle, TimeSpan Poll, bool CpuRanks = false, TransferSettings? Transfers = null);

public sealed class WorkerAgent(CliContext ctx, WorkerSettings settings) : IDisposable
{
    const int LogTailLines = 20;
    readonly HttpClient _http = Client(settings);
    // GPUs held by running jobs (a job asking for k GPUs holds k); claims are made one at a time, so
    // the GPUs a claim offers are still free when the job takes them.
    readonly HashSet<string> _busy = [];
    readonly SemaphoreSlim _claiming = new(1, 1);
    // Several ranks are launched by Open MPI's mpirun: without it a claim offers one GPU (one rank).
    readonly bool _mpirun = Anneal.Server.Runner.RankPlacement.MpirunFound();
    WorkerTransfers? _transfers;
    WorkerTransfers Transfers => _transfers ??= new WorkerTransfers(_http, ctx.Error, settings.Transfers ?? new TransferSettings());
    // Slots fetching the same dataset or image take turns: one writer per .partial file.
    readonly Dictionary<string, SemaphoreSlim> _fetching = [];

    static HttpClient Client(WorkerSettings s)
    {
        var http = new HttpClient { BaseAddress = new Uri(s.Server, "api/workers/"), Timeout = TimeSpan.FromMinutes(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", s.Token);
        return http;
    }

    public void Dispose()
    {
        _http.Dispose();
        _claiming.Dispose();
    }

    /// <summary>Runs every slot until cancelled (or, with ExitWhenIdle, until no job is queued); returns how many jobs ran.</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        await RegisterAsync(ct);
        var counts = await Task.WhenAll(settings.Slots.Select(gpu => Task.Run(() => SlotAsync(gpu, ct), ct)));
        return counts.Sum();
    }

    volatile bool _registered;

    /// <summary>
    /// Tells the server this host's slots (job creation checks [compute] against them); when the
    /// server cannot be reached yet, the next claim tries again.
    /// </summary>
    async Task RegisterAsync(CancellationToken ct)
    {
        // With mpirun one job may take every GPU of this host (gpus_per_slot); without, one each.
        var gpuCount = settings.Slots.Count(s => s is not null);
        var registration = new WorkerRegistration(settings.Name, gpuCount > 0 ? settings.GpuType : null,
            gpuCount == 0 ? 0 : _mpirun ? gpuCount : 1, settings.Slots.Count);
        try
        {
            using var response = await _http.PostAsJsonAsync("register", registration, AnnealJson.Options, ct);
            await EnsureAsync(response, "register", ct);
            _registered = true;
        }
        catch (HttpRequestException e) when (e.StatusCode is null)
        {
            ctx.Error.WriteLine($"worker: registering with {settings.Server} failed ({e.Message}); trying again with the next claim");
        }
        catch (HttpRequestException e)
        {
            // Refused (an older server without /register): claims still mark this worker seen.
            ctx.Error.WriteLine($"worker: the server refused the registration ({e.Message}); claiming jobs anyway");
            _registered = true;
        }
    }

    async Task<int> SlotAsync(string? gpu, CancellationToken ct)
    {
        var ran = 0;
        while (!ct.IsCancellationRequested)
        {
            WorkerClaim? claim;
            IReadOnlyList<string> gpus;
            if (!_registered) await RegisterAsync(ct);
            try { (claim, gpus) = await ClaimAsync(gpu, ct); }
            catch (HttpRequestException e)
            {
                ctx.Error.WriteLine($"worker: the server at {settings.Server} did not answer ({e.Message}); retrying");
                await Task.Delay(settings.Poll, ct);
                continue;
            }
            if (claim is null)
            {
                if (settings.ExitWhenIdle && (gpu is null || !Busy(gpu))) break;
                await Task.Delay(settings.Poll, ct);
                continue;
            }
            var on = gpus.Count > 0 ? $"GPU{(gpus.Count > 1 ? "s" : "")} {string.Join(',', gpus)}" : claim.Ranks > 1 ? $"{claim.Ranks} CPU ranks" : "cpu";
            ctx.Out.WriteLine($"worker: job {claim.JobId} attempt {claim.Attempt} on {on}");
            string outcome;
            try { outcome = await RunJobAsync(claim, gpus, ct); }
            catch (HttpRequestException e)
            {
                // The server is unreachable or refused a call: the trainer is stopped and the lease
                // left to lapse, so the server re-queues the job from its last uploaded checkpoint.
                outcome = $"abandoned ({e.Message}); the server re-queues it when the lease lapses";
            }
            finally { lock (_busy) _busy.ExceptWith(gpus); }
            ctx.Out.WriteLine($"worker: job {claim.JobId} attempt {claim.Attempt}: {outcome}");
            ran++;
        }
        return ran;
    }

    bool Busy(string gpu)
    {
        lock (_busy) return _busy.Contains(gpu);
    }

    /// <summary>
    /// Asks for a job for this slot's GPU, offering with it every other GPU free now (this one
    /// first); a job asking for several GPUs takes that many and holds them until it ends.
    /// </summary>
    async Task<(WorkerClaim? Claim, IReadOnlyList<string> Gpus)> ClaimAsync(string? gpu, CancellationToken ct)
    {
        await _claiming.WaitAsync(ct);
        try
        {
            List<string> offered = [];
            if (gpu is not null)
            {
                lock (_busy)
                {
                    if (_busy.Contains(gpu)) return (null, []);   // another slot's job holds it
                    offered = [gpu, .. _mpirun ? settings.Slots.OfType<string>().Where(g => g != gpu && !_busy.Contains(g)) : []];
                }
            }
            var request = new WorkerClaimRequest(settings.Name, offered, gpu is null ? null : settings.GpuType, gpu is null && settings.CpuRanks && _mpirun);
            using var response = await _http.PostAsJsonAsync("claim", request, AnnealJson.Options, ct);
            if (response.StatusCode == HttpStatusCode.NoContent) return (null, []);
            await EnsureAsync(response, "claim", ct);
            var claim = (await response.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options, ct))!;
            var taken = offered.Take(Math.Max(1, claim.Ranks)).ToList();
            lock (_busy) _busy.UnionWith(taken);
            return (claim, taken);
        }
        finally { _claiming.Release(); }
    }

    /// <summary>One attempt of one job on <paramref name="gpus"/> (none: the CPU); returns what happened, for the log.</summary>
    async Task<string> RunJobAsync(WorkerClaim claim, IReadOnlyList<string> gpus, CancellationToken ct)
    {
        var lease = new WorkerLease(claim.Owner, claim.Attempt);
        var jobDir = Path.Combine(settings.WorkDir, "jobs", claim.JobId, $"attempt-{claim.Attempt}");
        var output = Path.Combine(jobDir, "output");
        Directory.CreateDirectory(output);
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var heartbeat = new CancellationTokenSource();
        var beats = HeartbeatAsync(claim, lost, heartbeat.Token);
        try
        {
            TrainerJobSpec spec;
            try { spec = await PrepareAsync(claim, gpus, jobDir, output, lost.Token); }
            catch (Exception e) when (e is ModelDownloadException or IOException or HttpRequestException or InvalidDataException)
            {
                var failed = Line(EventTypes.Failed, "error", e.Message, new() { ["error"] = new System.Text.Json.Nodes.JsonObject { ["code"] = ErrorCodes.UserConfigError, ["message"] = e.Message } });
                await ExitAsync(claim, 2, [failed], [], ct);
                return $"failed before training: {e.Message}";
            }
            return await TrainAsync(claim, lease, gpus, jobDir, output, lost);
        }
        catch (LeaseLostException e) { return $"lease lost ({e.Message}): stopped, nothing more sent"; }
        catch (TransferFailedException e)
        {
            // The network or the server failed, not the job: the lease is left to lapse and the job re-queued.
            ctx.Error.WriteLine($"worker: job {claim.JobId} attempt {claim.Attempt}: {e.Message}; abandoning the claim");
            return $"abandoned: {e.Message}; the server re-queues it when the lease lapses";
        }
        catch (TransferIntegrityException e)
        {
            // Nothing ran: the lease is left to lapse and the server re-queues the job for a fresh download.
            ctx.Error.WriteLine($"worker: job {claim.JobId} attempt {claim.Attempt}: {e.Message}; abandoning the claim");
            return $"abandoned: {e.Message}; the server re-queues it when the lease lapses";
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested && !ct.IsCancellationRequested) { return "lease lost (the server refused the heartbeat with 409 lease_lost): stopped, nothing more sent"; }
        finally
        {
            await heartbeat.CancelAsync();
            try { await beats; } catch (OperationCanceledException) { }
        }
    }

    async Task<TrainerJobSpec> PrepareAsync(WorkerClaim claim, IReadOnlyList<string> gpus, string jobDir, string output, CancellationToken ct)
    {
        var train = await FetchFileAsync(claim.TrainingFile, ct);
        var validation = claim.ValidationFile is { } v ? await FetchFileAsync(v, ct) : null;
        await FetchImagesAsync(claim.TrainingFile, train, ct);
        if (claim.ValidationFile is { } vi) await FetchImagesAsync(vi, validation!, ct);
        string? resume = null;
        if (claim.ResumeFrom is { } from)
        {
            resume = Path.Combine(output, from);
            await FetchCheckpointAsync(claim, from, resume, jobDir, ct);
        }
        var modelPath = await BaseModelAsync(claim, ct);
        var spec = new TrainerJobSpec(claim.JobId, claim.Model, modelPath, train, validation, output, claim.Settings,
            ResumeFrom: resume, Device: gpus.Count == 0 ? "cpu" : "cuda", MergeLora: claim.MergeLora,
            TrainingFileName: $"{claim.TrainingFile.Name} ({claim.TrainingFile.Id})",
            ValidationFileName: claim.ValidationFile is { } vf ? $"{vf.Name} ({vf.Id})" : null);
        await File.WriteAllTextAsync(Path.Combine(jobDir, "spec.json"), JsonSerializer.Serialize(spec, AnnealJson.Indented), ct);
        return spec;
    }

    /// <summary>
    /// The base model: generated (the built-in tiny model), on this host (models folder, Hugging Face
    /// cache), else the server's copy (fine-tuned ids always come from there), else the Hub.
    /// </summary>
    async Task<string> BaseModelAsync(WorkerClaim claim, CancellationToken ct)
    {
        var sources = ModelSources.FromEnvironment(settings.ModelsDir ?? Path.Combine(settings.WorkDir, "models"), settings.AllowModelDownload);
        if (ModelRegistry.IsBuiltIn(claim.Model) || ModelResolver.FindLocal(claim.Model, sources) is not null)
            return await ModelResolver.ResolveAsync(claim.Model, sources, ct: ct);
        var (fromServer, why) = await ServerModelCache.FetchAsync(_http, Transfers, claim.JobId, settings.WorkDir, ct);
        if (fromServer is not null) return fromServer;
        if (!ModelResolver.IsValidId(claim.Model)) throw new ModelDownloadException(why!);
        return await ModelResolver.ResolveAsync(claim.Model, sources, ct: ct);
    }

    /// <summary>The dataset from the cache (files/&lt;sha256&gt;, checked) or the server.</summary>
    async Task<string> FetchFileAsync(WorkerFile file, CancellationToken ct)
    {
        var cache = Path.Combine(settings.WorkDir, "files");
        Directory.CreateDirectory(cache);
        var path = Path.Combine(cache, file.Sha256);
        using var turn = await TurnAsync(path, ct);
        if (File.Exists(path) && await Sha256Async(path, ct) == file.Sha256) return path;
        // Resumable (also across restarts of this worker): the partial's bytes are known by the sha256.
        var tmp = path + ".partial";
        await Transfers.DownloadAsync($"files/{file.Id}", tmp, file.Sha256, ct);
        var actual = await Sha256Async(tmp, ct);
        if (actual != file.Sha256)
        {
            File.Delete(tmp);
            throw new InvalidDataException($"file {file.Id}: downloaded bytes have sha256 {actual}, the server said {file.Sha256}");
        }
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    /// <summary>Waits until no other slot of this worker fetches <paramref name="path"/>; dispose to let the next one in.</summary>
    async Task<IDisposable> TurnAsync(string path, CancellationToken ct)
    {
        SemaphoreSlim gate;
        lock (_fetching)
            if (!_fetching.TryGetValue(path, out gate!)) _fetching[path] = gate = new SemaphoreSlim(1, 1);
        await gate.WaitAsync(ct);
        return new Release(gate);
    }

    sealed class Release(SemaphoreSlim gate) : IDisposable
    {
        public void Dispose() => gate.Release();
    }

    /// <summary>
    /// The https images the server fetched for a dataset, stored beside the cached copy as the server
    /// keeps them (Core's StoredImages), so the trainer reads the same bytes and never the network.
    /// Each is checked against its sha256; a damaged transfer abandons the claim.
    /// </summary>
    async Task FetchImagesAsync(WorkerFile file, string datasetPath, CancellationToken ct)
    {
        var index = await _http.GetFromJsonAsync<Dictionary<string, string>>($"files/{file.Id}/images", AnnealJson.Options, ct) ?? [];
        if (index.Count == 0) return;
        var have = StoredImages.Resolver(datasetPath);
        var images = new Dictionary<string, byte[]>();
        var byHash = new Dictionary<string, byte[]>();
        var downloaded = false;
        foreach (var (url, hash) in index)
        {
            if (!byHash.TryGetValue(hash, out var bytes))
            {
                try { bytes = have(url); }
                catch (InvalidDataException) { bytes = null; }   // a damaged cached copy is fetched again
                if (bytes is null || StoredImages.Hash(bytes) != hash)
                {
                    bytes = await FetchImageAsync(file, hash, datasetPath, ct);
                    if (StoredImages.Hash(bytes) != hash)
                        throw new TransferIntegrityException($"image {hash} of file {file.Id}: the downloaded bytes do not match its sha256");
                    downloaded = true;
                }
                byHash[hash] = bytes;
            }
            images[url] = bytes;
        }
        // Rewritten only when something was missing: another slot's trainer may be reading the folder.
        if (downloaded) StoredImages.Write(datasetPath, images);
    }

    /// <summary>One stored image, through a resumable download beside the dataset's cached copy.</summary>
    async Task<byte[]> FetchImageAsync(WorkerFile file, string hash, string datasetPath, CancellationToken ct)
    {
        var tmp = $"{datasetPath}.image-{hash}.partial";
        using var turn = await TurnAsync(tmp, ct);
        try
        {
            await Transfers.DownloadAsync($"files/{file.Id}/images/{hash}", tmp, hash, ct);
            return await File.ReadAllBytesAsync(tmp, ct);
        }
        finally { File.Delete(tmp); }
    }

    /// <summary>
    /// The checkpoint to resume from, as the server's tar, checked against the sha256 it sent
    /// (X-Content-SHA256) before anything is extracted; a mismatch abandons the claim.
    /// </summary>
    async Task FetchCheckpointAsync(WorkerClaim claim, string from, string resume, string jobDir, CancellationToken ct)
    {
        var tmp = Path.Combine(jobDir, $"resume-{Guid.NewGuid():n}.tar");
        try
        {
            var expected = await Transfers.DownloadAsync($"jobs/{claim.JobId}/artifacts/{from}", tmp, null, ct);
            var actual = await Sha256Async(tmp, ct);
            if (expected is null)
                throw new TransferIntegrityException($"checkpoint {from}: the server sent no {WorkerProtocol.Sha256Header} header, so the download cannot be checked");
            if (actual != expected)
                throw new TransferIntegrityException($"checkpoint {from}: the downloaded tar has sha256 {actual}, the server said {expected}");
            if (Directory.Exists(resume)) Directory.Delete(resume, recursive: true);
            Directory.CreateDirectory(resume);
            await TarFile.ExtractToDirectoryAsync(tmp, resume, overwriteFiles: true, ct);
        }
        finally { File.Delete(tmp); }
    }

    async Task<string> TrainAsync(WorkerClaim claim, WorkerLease lease, IReadOnlyList<string> gpus, string jobDir, string output, CancellationTokenSource lost)
    {
        // Several ranks: mpirun starts them all (one per GPU, or CPU ranks) and ends them all when one
        // dies, as `anneal serve` launches them (RankLaunch); they meet through the job folder.
        IReadOnlyList<string> command = claim.Ranks > 1
            ? [.. RankLaunch.MpirunPrefix(claim.Ranks, Environment.UserName == "root"), .. ctx.SelfCommand]
            : ctx.SelfCommand;
        var psi = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false, WorkingDirectory = jobDir,
        };
        foreach (var a in command.Skip(1).Concat(["trainer", "run", "--spec", Path.Combine(jobDir, "spec.json")])) psi.ArgumentList.Add(a);
        if (claim.Ranks > 1) psi.Environment[RankLaunch.RunIdVariable] = Guid.NewGuid().ToString("N");
        psi.Environment["CUDA_VISIBLE_DEVICES"] = string.Join(',', gpus);
        // The trainer stops (after a checkpoint) when this worker is gone, as it does for a server.
        psi.Environment[TrainerProtocol.ServerPidVariable] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(psi)!;
        void Kill()
        {
            try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        }
        await using var stop = lost.Token.Register(Kill);
        try { return await FollowAsync(claim, lease, process, output, lost); }
        finally { Kill(); } // an error on the way out (lease lost, server gone) never leaves the trainer running
    }

    async Task<string> FollowAsync(WorkerClaim claim, WorkerLease lease, Process process, string output, CancellationTokenSource lost)
    {
        var tail = new Queue<string>();
        var stderr = Task.Run(async () =>
        {
            while (await process.StandardError.ReadLineAsync() is { } line)
                lock (tail)
                {
                    tail.Enqueue(line);
                    if (tail.Count > LogTailLines) tail.Dequeue();
                }
        });
        var finals = new List<string>();
        var outputJson = JsonEncodedText.Encode(output).ToString();
        string Portable(string line) => line.Replace(outputJson, WorkerProtocol.OutputPlaceholder, StringComparison.Ordinal);
        while (await process.StandardOutput.ReadLineAsync() is { } line)
        {
            if (lost.IsCancellationRequested) throw new LeaseLostException("the heartbeat");
            TrainerEvent? e = null;
            try { e = JsonSerializer.Deserialize<TrainerEvent>(line, AnnealJson.Options); } catch (JsonException) { }
            if (e?.Type is EventTypes.Completed or EventTypes.Failed or EventTypes.Cancelled)
            {
                finals.Add(Portable(line));
                continue;
            }
            // The checkpoint is on the server before the line that names it.
            if (e?.Type == EventTypes.CheckpointSaved && e.Data?["path"]?.GetValue<string>() is { } saved)
            {
                var relative = Path.GetRelativePath(output, saved).Replace('\\', '/');
                if (!relative.StartsWith("..", StringComparison.Ordinal)) await UploadAsync(claim, lease, saved, relative, lost.Token);
            }
            await PostAsync($"jobs/{claim.JobId}/lines", new WorkerLines(lease.Owner, lease.Attempt, [Portable(line)]), lost.Token);
        }
        await process.WaitForExitAsync(lost.Token);
        await Task.WhenAny(stderr, Task.Delay(TimeSpan.FromSeconds(5)));
        if (lost.IsCancellationRequested) throw new LeaseLostException("the heartbeat");
        if (process.ExitCode == 0 && Directory.Exists(Path.Combine(output, "final")))
            await UploadAsync(claim, lease, Path.Combine(output, "final"), "final", lost.Token);
        List<string> logTail;
        lock (tail) logTail = [.. tail];
        var job = await ExitAsync(claim, process.ExitCode, finals, logTail, lost.Token);
        return $"exit {process.ExitCode}; the job is {job?.Status ?? "?"}";
    }

    async Task HeartbeatAsync(WorkerClaim claim, CancellationTokenSource lost, CancellationToken stop)
    {
        var every = TimeSpan.FromSeconds(Math.Max(0.2, claim.LeaseSeconds / 3));
        while (!stop.IsCancellationRequested)
        {
            await Task.Delay(every, stop);
            try
            {
                using var response = await _http.PostAsJsonAsync($"jobs/{claim.JobId}/heartbeat", new WorkerLease(claim.Owner, claim.Attempt), AnnealJson.Options, stop);
                if (response.StatusCode == HttpStatusCode.Conflict)
                {
                    ctx.Error.WriteLine($"worker: job {claim.JobId} attempt {claim.Attempt}: lease lost; stopping its trainer");
                    await lost.CancelAsync();
                    return;
                }
            }
            catch (HttpRequestException e) { ctx.Error.WriteLine($"worker: heartbeat failed ({e.Message}); the lease lasts {claim.LeaseSeconds:0} s"); }
        }
    }

    /// <summary>Tars <paramref name="folder"/> and uploads it as the job's output/<paramref name="relative"/> with its sha256, in resumable chunks.</summary>
    async Task UploadAsync(WorkerClaim claim, WorkerLease lease, string folder, string relative, CancellationToken ct)
    {
        var tmp = Path.Combine(settings.WorkDir, $"upload-{Guid.NewGuid():n}.tar");
        try
        {
            await TarFile.CreateFromDirectoryAsync(folder, tmp, includeBaseDirectory: false, ct);
            var sha = await Sha256Async(tmp, ct);
            var query = $"owner={Uri.EscapeDataString(lease.Owner)}&attempt={lease.Attempt}";
            await Transfers.UploadAsync($"jobs/{claim.JobId}/artifacts/{relative}?{query}", tmp, sha, ct);
        }
        finally { File.Delete(tmp); }
    }

    async Task<JobObject?> ExitAsync(WorkerClaim claim, int exitCode, IReadOnlyList<string> lines, IReadOnlyList<string> logTail, CancellationToken ct)
    {
        using var response = await _http.PostAsJsonAsync($"jobs/{claim.JobId}/exit", new WorkerExit(claim.Owner, claim.Attempt, exitCode, lines, logTail), AnnealJson.Options, ct);
        await EnsureAsync(response, "exit", ct);
        return await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options, ct);
    }

    async Task PostAsync<T>(string path, T body, CancellationToken ct)
    {
        using var response = await _http.PostAsJsonAsync(path, body, AnnealJson.Options, ct);
        await EnsureAsync(response, path, ct);
    }

    /// <summary>Throws for an error answer: LeaseLostException for 409, else HttpRequestException carrying the status.</summary>
    internal static async Task EnsureAsync(HttpResponseMessage response, string what, CancellationToken ct)
    {
        if (response.IsSuccessStatusCode) return;
        if (response.StatusCode == HttpStatusCode.Conflict) throw new LeaseLostException(what);
        var text = await response.Content.ReadAsStringAsync(ct);
        throw new HttpRequestException($"{what}: {(int)response.StatusCode} {text}", null, response.StatusCode);
    }

    static string Line(string type, string level, string message, System.Text.Json.Nodes.JsonObject? data = null) =>
        JsonSerializer.Serialize(new TrainerEvent(type, level, message, data), AnnealJson.Options);

    static async Task<string> Sha256Async(string path, CancellationToken ct)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
    }

    internal sealed class TransferIntegrityException(string message) : Exception(message);
}

/// <summary>The server answered 409 lease_lost: this attempt is no longer the worker's.</summary>
sealed class LeaseLostException(string refused) : Exception($"the server refused {refused} with 409 lease_lost");
