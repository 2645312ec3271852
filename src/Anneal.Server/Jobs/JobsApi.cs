// Jobs resource (DESIGN §3 "Jobs"): create, start, cancel, pause/resume, get, list, logs, and the
// views Synth's status commands read (status, config, timeline; runs, empty for SFT).
using System.Data.Common;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Events;
using Anneal.Server.Http;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Jobs;

public static class JobsApi
{
    public static IEndpointRouteBuilder MapJobsApi(this IEndpointRouteBuilder api)
    {
        var jobs = api.MapGroup("/learning/jobs");
        jobs.MapPost("/", JobCreation.Create);
        jobs.MapGet("/", List);
        jobs.MapGet("/{id}", Get);
        jobs.MapPost("/{id}/start", Start);
        jobs.MapPost("/{id}/cancel", Cancel);
        jobs.MapPost("/{id}/pause", Pause);
        jobs.MapPost("/{id}/resume", Resume);
        jobs.MapGet("/{id}/logs", Logs);
        jobs.MapGet("/{id}/status", Status);
        jobs.MapGet("/{id}/config", Config);
        jobs.MapGet("/{id}/timeline", JobTimeline.Get);
        // RL runs (Synth's `runs` command): an SFT job has none.
        api.MapGet("/jobs/{id}/runs", Runs);
        return api;
    }

    static Results<Ok<JobStatusObject>, ProblemHttpResult> Status(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is not { } job) return Problems.NotFound("job", id);
        var w = job.Wire;
        return TypedResults.Ok(new JobStatusObject(w.Id, w.Status, w.FineTunedModel, w.Error, w.Progress, w.UpdatedAt));
    }

    static Results<Ok<JobConfigObject>, ProblemHttpResult> Config(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is not { } job) return Problems.NotFound("job", id);
        var settings = job.EffectiveSettings().Settings;
        return TypedResults.Ok(new JobConfigObject(job.Wire.Id, job.Wire.Model, job.Wire.TrainingType, job.Wire.Hyperparameters, job.Wire.Metadata,
            settings is null ? null : System.Text.Json.JsonSerializer.SerializeToNode(settings, AnnealJson.Options)));
    }

    static Results<Ok<Dictionary<string, object[]>>, ProblemHttpResult> Runs(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is null) return Problems.NotFound("job", id);
        return TypedResults.Ok(new Dictionary<string, object[]> { ["runs"] = [] });
    }

    static Results<Ok<JobObject>, ProblemHttpResult> Get(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        return JobRows.Find(conn, null, http.Org(), id) is { } job ? TypedResults.Ok(job.Wire) : Problems.NotFound("job", id);
    }

    static Results<Ok<JobList>, ProblemHttpResult> List(HttpContext http, Db db, string? status, string? limit, string? after)
    {
        if (!Paging.TryLimit(limit, out var n, out var problem)) return problem;
        string[] statuses = [JobStatus.Created, JobStatus.Queued, JobStatus.Running, JobStatus.Paused, JobStatus.Succeeded, JobStatus.Failed, JobStatus.Cancelled];
        if (status is not null && !statuses.Contains(status))
            return Problems.BadRequest($"status '{status}' is not a job status; expected one of {string.Join(", ", statuses)}.",
                [new ErrorItem(null, "status", $"expected one of {string.Join(", ", statuses)}")]);
        var org = http.Org();
        using var conn = db.Connect();
        long? cursor = null;
        if (!string.IsNullOrEmpty(after))
        {
            cursor = Db.Scalar<long?>(conn, null, "SELECT rowid FROM jobs WHERE id = @id AND org = @org", ("@id", after), ("@org", org));
            if (cursor is null) return Problems.BadRequest($"after: no job with id '{after}'.", [new ErrorItem(null, "after", $"unknown job id '{after}'")]);
        }
        var rows = Db.Query(conn, null, $"""
            SELECT {JobRows.Columns} FROM jobs
            WHERE org = @org AND (@status IS NULL OR status = @status) AND (@cursor IS NULL OR rowid < @cursor)
            ORDER BY rowid DESC LIMIT @take
            """, JobRows.Map, ("@org", org), ("@status", status), ("@cursor", cursor), ("@take", n + 1));
        var page = Paging.TakeWithinBytes(rows.Take(n).Select(r => r.Wire), j => Db.ToJson(j)!.Length);
        return TypedResults.Ok(new JobList(page, rows.Count > page.Count));
    }

    static Results<Ok<JobObject>, ProblemHttpResult> Start(string id, HttpContext http, Db db, JobSignals signals)
    {
        var org = http.Org();
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        var job = JobRows.Find(conn, tx, org, id);
        if (job is null) return Problems.NotFound("job", id);
        if (!JobRows.Transition(conn, tx, id, [JobStatus.Created], JobStatus.Queued))
            return Problems.InvalidState("job", id, job.Wire.Status, "start");
        JobEvents.Append(conn, tx, id, EventTypes.Queued, "info", "Job queued; it starts when a trainer slot is free.");
        tx.Commit();
        signals.WorkAvailable.Signal();
        signals.EventsAppended.Signal();
        return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
    }

    /// <summary>
    /// created/queued → cancelled at once. running → the trainer gets SIGTERM and stops at its next
    /// optimizer step (killed after the grace period); the answer waits for that, so it says `cancelled`.
    /// </summary>
    static async Task<Results<Ok<JobObject>, ProblemHttpResult>> Cancel(string id, HttpContext http, Db db, JobSignals signals, JobScheduler scheduler, ServerOptions options)
    {
        var org = http.Org();
        using var conn = db.Connect();
        var job = JobRows.Find(conn, null, org, id);
        if (job is null) return Problems.NotFound("job", id);
        if (job.Wire.Status == JobStatus.Running && scheduler.RequestCancel(id) is { } finished)
        {
            await Task.WhenAny(finished, Task.Delay(options.CancelGracePeriod + TimeSpan.FromSeconds(10)));
            return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
        }
        using (var tx = Db.Begin(conn))
        {
            // `running` here means no trainer of this server holds the job (none configured): nothing to stop.
            string[] from = job.Wire.Status == JobStatus.Running ? [JobStatus.Running] : [JobStatus.Created, JobStatus.Queued, JobStatus.Paused];
            if (!JobRows.Transition(conn, tx, id, from, JobStatus.Cancelled))
            {
                var now = JobRows.Find(conn, tx, org, id)!.Wire.Status;
                tx.Rollback();
                // Claimed by the scheduler since we looked: cancel the run instead.
                if (now == JobStatus.Running && scheduler.RequestCancel(id) is { } started)
                {
                    await Task.WhenAny(started, Task.Delay(options.CancelGracePeriod + TimeSpan.FromSeconds(10)));
                    return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
                }
                return Problems.InvalidState("job", id, now, "cancel");
            }
            JobEvents.Append(conn, tx, id, EventTypes.Cancelled, "info", "Job cancelled by the user.");
            tx.Commit();
        }
        signals.EventsAppended.Signal();
        return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
    }

    /// <summary>
    /// running → paused: the trainer is stopped (SIGTERM, as cancel) and its device released; resume
    /// re-queues the job from its latest checkpoint. Only once a checkpoint exists, since pausing
    /// earlier would throw away all progress.
    /// </summary>
    static async Task<Results<Ok<JobObject>, ProblemHttpResult>> Pause(string id, HttpContext http, Db db, JobScheduler scheduler, ServerOptions options)
    {
        var org = http.Org();
        using var conn = db.Connect();
        var job = JobRows.Find(conn, null, org, id);
        if (job is null) return Problems.NotFound("job", id);
        if (job.Wire.Status != JobStatus.Running) return Problems.InvalidState("job", id, job.Wire.Status, "pause");
        var hasCheckpoint = false;
        foreach (var path in Db.Query(conn, null, "SELECT path FROM checkpoints WHERE job_id = @id", r => r.GetString(0), ("@id", id)))
            if (hasCheckpoint = await Runner.JobArtifacts.ExistsAsync(db, path, http.RequestAborted)) break;
        if (!hasCheckpoint)
            return Problems.Make(409, ErrorCodes.InvalidState, "No checkpoint yet",
                $"Job '{id}' has no checkpoint yet, so pausing would discard all its progress; set hyperparameters.save_steps to checkpoint periodically, wait for the first checkpoint, or cancel.",
                extra: new Dictionary<string, object?> { ["current_status"] = job.Wire.Status });
        if (scheduler.RequestPause(id) is not { } stopped) return Problems.InvalidState("job", id, job.Wire.Status, "pause");
        await Task.WhenAny(stopped, Task.Delay(options.CancelGracePeriod + TimeSpan.FromSeconds(10)));
        return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
    }

    /// <summary>paused → queued: the scheduler starts a trainer that resumes from the checkpoint recorded at pause.</summary>
    static Results<Ok<JobObject>, ProblemHttpResult> Resume(string id, HttpContext http, Db db, JobSignals signals)
    {
        var org = http.Org();
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        var job = JobRows.Find(conn, tx, org, id);
        if (job is null) return Problems.NotFound("job", id);
        if (!JobRows.Transition(conn, tx, id, [JobStatus.Paused], JobStatus.Queued))
            return Problems.InvalidState("job", id, job.Wire.Status, "resume");
        JobEvents.Append(conn, tx, id, EventTypes.Resumed, "info",
            job.ResumeFrom is null ? "Job resumed and queued." : $"Job resumed and queued; it continues from {job.ResumeFrom}.",
            new System.Text.Json.Nodes.JsonObject { ["resume_from"] = job.ResumeFrom });
        tx.Commit();
        signals.WorkAvailable.Signal();
        signals.EventsAppended.Signal();
        return TypedResults.Ok(JobRows.Find(conn, null, org, id)!.Wire);
    }

    /// <summary>The trainer's stderr (jobs/&lt;id&gt;/trainer.log) as text/plain.</summary>
    static Results<FileStreamHttpResult, ContentHttpResult, ProblemHttpResult> Logs(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is null) return Problems.NotFound("job", id);
        var path = Path.Combine(db.JobsDir, id, "trainer.log");
        if (!File.Exists(path)) return TypedResults.Text("", "text/plain; charset=utf-8");
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return TypedResults.File(stream, "text/plain; charset=utf-8");
    }
}
