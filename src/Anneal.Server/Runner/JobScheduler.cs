// Claims queued jobs and runs each in its own trainer process, at most MaxConcurrentJobs at once
// (and at most one per configured GPU). The claim is one atomic UPDATE … WHERE status = 'queued'
// that also takes a lease (JobLeases); on PostgreSQL the inner SELECT is `… FOR UPDATE SKIP LOCKED`
// so several servers claim from the same table without taking the same job. While trainers run,
// their leases are renewed every third of LeaseDuration; on a shared store this loop also recovers
// jobs whose lease lapsed (their server died), and a graceful stop hands its leases back.
// Devices: the scheduler owns the GPUs of --gpus. A job takes as many as it has ranks; the
// inference GPU (--inference-gpu, when it is also in --gpus) is taken out of the pool while GPU
// deployments hold it (InferenceDevices) and comes back when the last one ends, so a job never
// gets a device a deployment holds and a deployment never gets one a job holds.
using System.Data.Common;
using System.Collections.Concurrent;
using Anneal.Core.Contracts;
using Anneal.Server.Events;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public sealed class JobScheduler(Db db, ServerOptions options, JobSignals signals, ILogger<JobScheduler> log,
    RankRendezvousStore rendezvous, Microsoft.AspNetCore.Hosting.Server.IServer server) : BackgroundService
{
    readonly ConcurrentDictionary<string, TrainerRun> _runs = new();
    // GPUs no job and no deployment holds, in --gpus order; guarded by _claimGate.
    readonly List<string> _freeGpus = [.. options.Gpus];
    // Held across claim + registration (a cancel never sees a job `running` without its run) and
    // around every change of _freeGpus.
    readonly Lock _claimGate = new();
    /// <summary>Trainer processes this server runs now.</summary>
    public int RunningCount => _runs.Count;
    /// <summary>This server's name in job leases.</summary>
    public string Owner { get; } = JobLeases.NewOwner();
    DateTime _nextHeartbeat = DateTime.MinValue;
    Task _recovery = Task.CompletedTask;

    int Slots => options.Gpus.Count > 0 ? Math.Min(options.MaxConcurrentJobs, options.Gpus.Count) : options.MaxConcurrentJobs;

    protected override async Task ExecuteAsync(CancellationToken ct)
    {
        var runsJobs = options.TrainerCommand.Count > 0;
        if (!runsJobs)
        {
            log.LogWarning("No trainer command configured: jobs are accepted and queued but not run.");
            // Without trainers of its own a server still recovers the jobs of servers and workers that died.
            if (!db.Shared && options.WorkerToken is null) return;
        }
        while (!ct.IsCancellationRequested)
        {
            while (runsJobs && _runs.Count < Slots)
            {
                lock (_claimGate)
                {
                    if (!EnoughFreeGpusForNext()) break;   // a multi-GPU job waits at the head of the queue
                    if (Claim() is not { } claim) break;
                    Launch(claim.Job, claim.Lease);
                }
            }
            if (DateTime.UtcNow >= _nextHeartbeat)
            {
                _nextHeartbeat = DateTime.UtcNow + options.LeaseDuration / 3;
                try { Heartbeat(); }
                catch (Exception e) when (e is System.Data.Common.DbException or InvalidOperationException or TimeoutException)
                {
                    // The database is unreachable for now: the leases last LeaseDuration; try again soon.
                    log.LogWarning(e, "Renewing job leases failed");
                }
            }
            try { await signals.WorkAvailable.WaitAsync(TimeSpan.FromSeconds(1), ct); }
            catch (OperationCanceledException) { break; }
        }
    }

    /// <summary>Atomically moves the oldest queued job to running under a lease (with its sft.running event), or null.</summary>
    (JobRow Job, JobLease Lease)? Claim()
    {
        using var conn = db.Connect();
        using var tx = Db.BeginRowLocked(conn);
        if (JobLeases.Claim(conn, tx, Owner, options.LeaseDuration) is not { } claim) return null;
        JobEvents.Append(conn, tx, claim.JobId, EventTypes.Running, "info", "Trainer process starting.",
            new System.Text.Json.Nodes.JsonObject { ["attempt"] = claim.Lease.Attempt });
        var job = JobRows.FindAny(conn, tx, claim.JobId)!;
        tx.Commit();
        signals.EventsAppended.Signal();
        return (job, claim.Lease);
    }

    /// <summary>Renews the lease of every run (a run whose lease is gone stops); on a shared store, recovers lapsed jobs in the background.</summary>
    void Heartbeat()
    {
        using (var conn = db.Connect())
            foreach (var run in _runs.Values)
                if (!JobLeases.Renew(conn, run.JobId, run.Lease, options.LeaseDuration))
                    run.LoseLease();
        // Jobs of other servers (shared store) and of workers whose lease lapsed; this server's own
        // runs were renewed just above.
        if ((db.Shared || options.WorkerToken is not null) && _recovery.IsCompleted)
            _recovery = Task.Run(() =>
            {
                try
                {
                    if (Recovery.RequeueLapsed(db, options, Owner) > 0) signals.WorkAvailable.Signal();
                    // Chunked uploads of worker attempts that lost their lease can never complete.
                    if (options.WorkerToken is not null) Workers.ArtifactUploads.SweepAbandoned(db);
                }
                catch (Exception e) { log.LogError(e, "Recovering jobs with lapsed leases failed"); }
            });
    }

    /// <summary>Whether the oldest queued job's GPUs ([compute].gpu_count, one per rank; see RankPlacement) are free.</summary>
    bool EnoughFreeGpusForNext()
    {
        if (options.Gpus.Count == 0) return true;
        if (_freeGpus.Count == 0) return false;   // jobs and deployments hold every GPU
        using var conn = db.Connect();
        var id = Db.Scalar<string>(conn, null, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, rowid LIMIT 1");
        // Nothing queued now: a job queued between this check and the claim must not be claimed
        // unchecked (it may need more GPUs than are free); the next turn checks it.
        if (id is null || JobRows.FindAny(conn, null, id) is not { } next) return false;
        return RankPlacement.GpusToTake(RankPlacement.RequestedGpus(next), options) <= _freeGpus.Count;
    }

    /// <summary>GPUs of --gpus that no job and no deployment holds now.</summary>
    public IReadOnlyList<string> FreeGpus
    {
        get { lock (_claimGate) return [.. _freeGpus]; }
    }

    /// <summary>
    /// Takes a GPU of --gpus out of the jobs' pool for the inference process; false when a running
    /// job holds it. Give it back with <see cref="ReturnGpu"/> once the inference process has left it.
    /// </summary>
    public bool TryTakeGpu(string gpu)
    {
        lock (_claimGate) return _freeGpus.Remove(gpu);
    }

    /// <summary>Puts a GPU taken with <see cref="TryTakeGpu"/> back in the jobs' pool; a queued job may start on it at once.</summary>
    public void ReturnGpu(string gpu)
    {
        lock (_claimGate)
            if (!_freeGpus.Contains(gpu)) _freeGpus.Add(gpu);
        signals.WorkAvailable.Signal();
    }

    void Launch(JobRow job, JobLease lease)
    {
        // One GPU per rank, handed over as one CUDA_VISIBLE_DEVICES list ("0,1,2,3").
        var taken = new List<string>();
        for (var i = RankPlacement.GpusToTake(RankPlacement.RequestedGpus(job), options); i > 0; i--)
        {
            if (_freeGpus.Count == 0) throw new InvalidOperationException("claimed a job with no free GPU"); // checked before the claim, under the same lock
            taken.Add(_freeGpus[0]);
            _freeGpus.RemoveAt(0);
        }
        var gpu = taken.Count > 0 ? string.Join(',', taken) : null;
        var run = new TrainerRun(db, options, signals, log, job, gpu, lease) { Rendezvous = (rendezvous, ServerAddress) };
        _runs[job.Wire.Id] = run;
        run.Completion = Task.Run(async () =>
        {
            try { await run.RunAsync(); }
            catch (Exception e)
            {
                log.LogError(e, "Runner for job {JobId} failed", job.Wire.Id);
                run.FailInternal(e);
            }
            finally
            {
                _runs.TryRemove(job.Wire.Id, out _);
                lock (_claimGate) _freeGpus.AddRange(taken);
                signals.WorkAvailable.Signal();
            }
        });
    }

    /// <summary>Where this server listens (for the ranks' rendezvous): known once it has started, before any job runs.</summary>
    string ServerAddress() =>
        server.Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()?.Addresses.FirstOrDefault()?.TrimEnd('/') ?? options.Urls;

    /// <summary>Asks a running trainer to stop (SIGTERM, then kill after the grace period); the task ends when the job has its final status. Null if this server runs no trainer for the job.</summary>
    public Task? RequestCancel(string jobId)
    {
        TrainerRun? run;
        lock (_claimGate)
            if (!_runs.TryGetValue(jobId, out run)) return null;
        run.Cancel();
        return run.Completion;
    }

    /// <summary>Asks a running trainer to stop so the job can be paused; like <see cref="RequestCancel"/>.</summary>
    public Task? RequestPause(string jobId)
    {
        TrainerRun? run;
        lock (_claimGate)
            if (!_runs.TryGetValue(jobId, out run)) return null;
        run.Pause();
        return run.Completion;
    }

    /// <summary>On shutdown: trainers get SIGTERM (then kill); their jobs stay `running` and are re-queued on the next start.</summary>
    public override async Task StopAsync(CancellationToken ct)
    {
        await base.StopAsync(ct);
        var runs = _runs.Values.ToList();
        foreach (var run in runs) run.Shutdown();
        await Task.WhenAll(runs.Select(r => r.Completion));
        await _recovery;
        if (!db.Shared) return;
        // Another server recovers these jobs at once instead of after the lease lapses.
        try
        {
            using var conn = db.Connect();
            foreach (var run in runs) JobLeases.Release(conn, run.JobId, run.Lease);
        }
        catch (System.Data.Common.DbException e) { log.LogWarning(e, "Handing back job leases failed; they lapse by themselves"); }
    }
}
