// Claims queued jobs and runs each in its own trainer process, at most MaxConcurrentJobs at once
// (and at most one per configured GPU). The claim is one atomic UPDATE … WHERE status = 'queued';
// on PostgreSQL the inner SELECT becomes `… FOR UPDATE SKIP LOCKED` so several worker hosts can
// claim from the same table without taking the same job.
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
    readonly ConcurrentQueue<string> _freeGpus = new(options.Gpus);
    // Held across claim + registration, so a cancel never sees a job `running` without its run.
    readonly Lock _claimGate = new();

    int Slots => options.Gpus.Count > 0 ? Math.Min(options.MaxConcurrentJobs, options.Gpus.Count) : options.MaxConcurrentJobs;

    protected override async Task ExecuteAsync(CancellationToken ct)
    {
        if (options.TrainerCommand.Count == 0)
        {
            log.LogWarning("No trainer command configured: jobs are accepted and queued but not run.");
            return;
        }
        while (!ct.IsCancellationRequested)
        {
            while (_runs.Count < Slots)
            {
                lock (_claimGate)
                {
                    if (!EnoughFreeGpusForNext()) break;   // a multi-GPU job waits at the head of the queue
                    if (Claim() is not { } job) break;
                    Launch(job);
                }
            }
            try { await signals.WorkAvailable.WaitAsync(TimeSpan.FromSeconds(1), ct); }
            catch (OperationCanceledException) { break; }
        }
    }

    /// <summary>Atomically moves the oldest queued job to running (with its sft.running event), or null.</summary>
    JobRow? Claim()
    {
        using var conn = db.Connect();
        using var tx = conn.BeginTransaction();
        var id = Db.Scalar<string>(conn, tx, """
            UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, @t)
            WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, rowid LIMIT 1) AND status = 'queued'
            RETURNING id
            """, ("@t", Db.Now()));
        if (id is null) return null;
        JobEvents.Append(conn, tx, id, EventTypes.Running, "info", "Trainer process starting.");
        var job = JobRows.FindAny(conn, tx, id)!;
        tx.Commit();
        signals.EventsAppended.Signal();
        return job;
    }

    /// <summary>Whether the oldest queued job's GPUs ([compute].gpu_count, one per rank; see RankPlacement) are free.</summary>
    bool EnoughFreeGpusForNext()
    {
        if (options.Gpus.Count == 0) return true;
        using var conn = db.Connect();
        var id = Db.Scalar<string>(conn, null, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, rowid LIMIT 1");
        if (id is null || JobRows.FindAny(conn, null, id) is not { } next) return true;
        return RankPlacement.GpusToTake(RankPlacement.RequestedGpus(next), options) <= _freeGpus.Count;
    }

    void Launch(JobRow job)
    {
        // One GPU per rank, handed over as one CUDA_VISIBLE_DEVICES list ("0,1,2,3").
        var taken = new List<string>();
        for (var i = RankPlacement.GpusToTake(RankPlacement.RequestedGpus(job), options); i > 0; i--)
            taken.Add(_freeGpus.TryDequeue(out var g) ? g : throw new InvalidOperationException("claimed a job with no free GPU")); // checked before the claim
        var gpu = taken.Count > 0 ? string.Join(',', taken) : null;
        var run = new TrainerRun(db, options, signals, log, job, gpu) { Rendezvous = (rendezvous, ServerAddress) };
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
                foreach (var g in taken) _freeGpus.Enqueue(g);
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
    }
}
