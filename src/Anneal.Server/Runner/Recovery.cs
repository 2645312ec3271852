// Start-up recovery: a job still `running` in the database belongs to a trainer of a previous
// server process (stopped or killed). It is re-queued — from its latest checkpoint when one exists
// on disk — with an `sft.requeued` event saying why, or failed (server_restarted) once it has been
// re-queued MaxJobRestarts times, so a job that crashes the server cannot loop forever.
// A trainer stops by itself when its server dies (Anneal.Training.ServerWatch); one still running
// is stopped first (checkpoint-and-stop, then SIGKILL after the grace period) so two trainers never
// share a job folder. Then what the trainer left on disk decides: a finished final/ is adopted
// (the job succeeds), else the job resumes from the newest complete checkpoint on disk.
// Each job moves only if it is still `running` when its transaction runs (the status check and the
// event are one transaction), so a job that reached a final status meanwhile keeps it and gets no
// contradicting sft.requeued event. The data-folder lock (DataDirLock) keeps a live server's jobs
// out of this path altogether.
// On a shared store (PostgreSQL, several servers) a `running` job may be another live server's, so
// only jobs whose lease has lapsed are recovered (RequeueLapsed, at start and then periodically),
// each after taking its lease over, so two servers never recover the same job.
using System.Data.Common;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Server.Events;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public static class Recovery
{
    const string ServerRestarted = "server_restarted";
    const string LeaseLapsed = "lease_expired";

    public static void RequeueInterrupted(Db db, ServerOptions options, string? owner = null)
    {
        if (db.Shared)
        {
            RequeueLapsed(db, options, owner ?? JobLeases.NewOwner());
            return;
        }
        using var conn = db.Connect();
        var running = Db.Query(conn, null, $"SELECT {JobRows.Columns} FROM jobs WHERE status = @s ORDER BY rowid", JobRows.Map, ("@s", JobStatus.Running));
        foreach (var job in running) Requeue(db, conn, options, job, ServerRestarted);
    }

    /// <summary>Recovers the running jobs whose lease lapsed (their server died or stalled); returns how many it took over.</summary>
    public static int RequeueLapsed(Db db, ServerOptions options, string owner)
    {
        using var conn = db.Connect();
        var taken = 0;
        foreach (var (id, released) in JobLeases.Lapsed(conn))
        {
            if (!JobLeases.TakeLapsed(conn, id, owner, options.LeaseDuration + options.CancelGracePeriod)) continue;
            taken++;
            if (JobRows.FindAny(conn, null, id) is { } job) Requeue(db, conn, options, job, released ? ServerRestarted : LeaseLapsed);
        }
        return taken;
    }

    static void Requeue(Db db, DbConnection conn, ServerOptions options, JobRow job, string reason)
    {
        var why = reason == ServerRestarted ? "The server restarted while the job was running" : "The server running the job stopped renewing its lease";
        var id = job.Wire.Id;
        var pid = Db.Scalar<long?>(conn, null, "SELECT trainer_pid FROM jobs WHERE id = @id", ("@id", id));
        if (pid is { } p) StopOrphan((int)p, Path.Combine(db.JobsDir, id, "spec.json"), options.CancelGracePeriod);
        var output = Path.Combine(db.JobsDir, id, "output");
        JobOutput.RemovePartials(output);
        // A trainer that finished while the server was down (its sft.completed never arrived).
        if (JobOutput.FinishedFinal(output) is { } final)
        {
            var merged = Path.Combine(final, "merged");
            var completed = new CompletedData(output, final, Directory.Exists(merged) ? merged : null, null, null);
            // A model the object store refused is not adopted: the job is re-queued below instead.
            try { if (TrainerRun.RecordSucceeded(db, job, completed, " (finished while the server was down; adopted on restart)", null)) return; }
            catch (ObjectStoreException) { }
        }
        using var tx = Db.Begin(conn);
        var restarts = job.Restarts + 1;
        if (restarts > options.MaxJobRestarts)
        {
            var error = new JobError(ErrorCodes.ServerRestarted,
                $"{why}, {restarts} times; it was re-queued {options.MaxJobRestarts} times and is now failed.");
            if (!JobRows.Transition(conn, tx, id, [JobStatus.Running], JobStatus.Failed)) return; // rolled back
            Db.Exec(conn, tx, "UPDATE jobs SET restarts = @r, error = @e WHERE id = @id", ("@r", restarts), ("@e", Db.ToJson(error)), ("@id", id));
            JobEvents.Append(conn, tx, id, EventTypes.Failed, "error", TrainerRun.FailedHeadline,
                new JsonObject { ["error"] = new JsonObject { ["code"] = error.Code, ["message"] = error.Message } });
        }
        else
        {
            // The newest complete checkpoint on disk, which may be newer than any the database
            // heard of (saved while the server was down) or replace a recorded one whose
            // optimizer state was pruned; recorded so it is listed and usable as a model.
            var checkpoint = Db.Query(conn, tx, "SELECT step, path FROM checkpoints WHERE job_id = @id ORDER BY step DESC",
                    r => (Step: r.GetInt64(0), Path: r.GetString(1)), ("@id", id))
                // Another server's checkpoint is in the object store, not on this disk: the run fetches it (JobArtifacts).
                .FirstOrDefault(c => JobOutput.IsCompleteCheckpoint(JobArtifacts.Local(db, c.Path)) || JobArtifacts.InStore(db, c.Path));
            if (JobOutput.NewestCompleteCheckpoint(output) is { } onDisk && onDisk.Step > checkpoint.Step)
            {
                checkpoint = (onDisk.Step, JobArtifacts.Stored(db, onDisk.Path));
                Db.Exec(conn, tx, """
                    INSERT INTO checkpoints (id, job_id, org, step, path, metrics, created_at)
                    VALUES (@cid, @job, @org, @step, @path, NULL, @t)
                    ON CONFLICT DO NOTHING
                    """, ("@cid", $"{TrainerRun.FineTunedId(db, job)}:step-{onDisk.Step}"), ("@job", id), ("@org", job.Org),
                    ("@step", (long)onDisk.Step), ("@path", JobArtifacts.Stored(db, onDisk.Path)), ("@t", Db.Now()));
            }
            var resume = checkpoint.Path;
            if (!JobRows.Transition(conn, tx, id, [JobStatus.Running], JobStatus.Queued)) return; // rolled back
            Db.Exec(conn, tx, "UPDATE jobs SET restarts = @r, resume_from = @resume, trainer_pid = NULL, lease_owner = NULL, lease_until = NULL WHERE id = @id",
                ("@r", restarts), ("@resume", resume), ("@id", id));
            var how = resume is null ? "from scratch (no checkpoint saved yet)" : $"from its checkpoint at step {checkpoint.Step}";
            JobEvents.Append(conn, tx, id, EventTypes.Requeued, "warning",
                $"{why}; re-queued {how} (restart {restarts} of at most {options.MaxJobRestarts}).",
                new JsonObject { ["reason"] = reason, ["restarts"] = restarts, ["resume_from"] = resume is null ? null : JobOutput.Relative(JobArtifacts.Local(db, resume), Path.Combine(db.JobsDir, id)), ["resume_step"] = resume is null ? null : checkpoint.Step });
        }
        tx.Commit();
    }

    /// <summary>Stops process <paramref name="pid"/> if it still is the trainer of this spec (a reused PID is left alone).</summary>
    static void StopOrphan(int pid, string specPath, TimeSpan grace)
    {
        bool IsTrainer()
        {
            try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Contains(specPath, StringComparison.Ordinal); }
            catch (IOException) { return false; }
            catch (UnauthorizedAccessException) { return false; }
        }
        if (!OperatingSystem.IsLinux() || !IsTrainer()) return;
        // Checkpoint and stop: whatever it trained since the last checkpoint is kept.
        Native.Kill(pid, TrainerProtocol.CheckpointAndStopSignal);
        var deadline = DateTime.UtcNow + grace;
        while (IsTrainer() && DateTime.UtcNow < deadline) Thread.Sleep(100);
        if (IsTrainer()) Native.Kill(pid, Native.SigKill);
        for (var i = 0; i < 50 && IsTrainer(); i++) Thread.Sleep(100);
    }
}
