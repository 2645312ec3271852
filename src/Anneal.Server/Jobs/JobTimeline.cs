// GET /api/learning/jobs/{id}/timeline?limit= → {events:[{phase, created_at, message}]}: the job's
// phases, read from its lifecycle events (every status change is one). Synth's streaming client
// polls it on every cycle and prints `timeline=<phase>`.
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Jobs;

public static class JobTimeline
{
    /// <summary>Event type → the phase it starts.</summary>
    static readonly Dictionary<string, string> Phases = new()
    {
        [EventTypes.Created] = JobStatus.Created,
        [EventTypes.Queued] = JobStatus.Queued,
        [EventTypes.Requeued] = JobStatus.Queued,
        [EventTypes.Resumed] = JobStatus.Queued,
        [EventTypes.Running] = JobStatus.Running,
        [EventTypes.Paused] = JobStatus.Paused,
        [EventTypes.Completed] = JobStatus.Succeeded,
        [EventTypes.Failed] = JobStatus.Failed,
        [EventTypes.Cancelled] = JobStatus.Cancelled,
    };

    public static Results<Ok<Timeline>, ProblemHttpResult> Get(string id, HttpContext http, Db db, string? limit)
    {
        if (!Paging.TryLimit(limit, out var n, out var problem, max: 1000, @default: 100)) return problem;
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is null) return Problems.NotFound("job", id);
        var types = Phases.Keys.ToList();
        var names = string.Join(", ", types.Select((_, i) => $"@t{i}"));
        var args = types.Select((t, i) => ($"@t{i}", (object?)t)).Append(("@job", id)).Append(("@limit", n)).ToArray();
        var entries = Db.Query(conn, null, $"""
            SELECT type, created_at, message FROM job_events WHERE job_id = @job AND type IN ({names}) ORDER BY seq LIMIT @limit
            """,
            r => new TimelineEntry(Phases[r.GetString(0)], Db.ParseTime(r.GetString(1)), r.GetString(2)), args);
        return TypedResults.Ok(new Timeline(entries));
    }
}
