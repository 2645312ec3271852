// GET /api/learning/jobs/{id}/events?since_seq=&limit= → {events:[…]}; with
// `Accept: text/event-stream` the same URL streams events as SSE (id: seq, event: type,
// data: the JobEvent JSON) until the job is terminal and every event has been sent.
// An idle stream wakes when this process appends an event; on a shared store (PostgreSQL, several
// servers) events of a job another server or its worker records never signal this process, so
// the stream also looks again every SharedStorePoll (one indexed read per open stream).
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Events;

public static class EventsApi
{
    static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(15);
    /// <summary>How often an idle stream reads the shared store for events other servers wrote.</summary>
    public static readonly TimeSpan SharedStorePoll = TimeSpan.FromMilliseconds(500);

    public static IEndpointRouteBuilder MapEventsApi(this IEndpointRouteBuilder api)
    {
        api.MapGet("/learning/jobs/{id}/events", Get);
        return api;
    }

    static async Task<Results<Ok<EventList>, EmptyHttpResult, ProblemHttpResult>> Get(
        string id, HttpContext http, Db db, JobSignals signals, string? since_seq, string? limit, CancellationToken ct)
    {
        long since = 0;
        if (!string.IsNullOrEmpty(since_seq) && (!long.TryParse(since_seq, out since) || since < 0))
            return Problems.BadRequest($"since_seq must be a non-negative integer, got '{since_seq}'.", [new ErrorItem(null, "since_seq", "expected a non-negative integer")]);
        if (!Paging.TryLimit(limit, out var n, out var problem, max: 1000, @default: 100)) return problem;
        var org = http.Org();
        using (var conn = db.Connect())
            if (JobRows.Find(conn, null, org, id) is null) return Problems.NotFound("job", id);

        if (!http.Request.Headers.Accept.ToString().Contains("text/event-stream", StringComparison.OrdinalIgnoreCase))
        {
            using var conn = db.Connect();
            return TypedResults.Ok(new EventList(JobEvents.Read(conn, id, since, n)));
        }

        // SSE: a reconnecting client sends Last-Event-ID, which wins over since_seq.
        if (long.TryParse(http.Request.Headers["Last-Event-ID"].ToString(), out var lastId)) since = lastId;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        await http.Response.Body.FlushAsync(ct);
        var idleSince = DateTime.UtcNow;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                bool terminal;
                List<JobEvent> batch;
                var wake = signals.EventsAppended.Next;
                using (var conn = db.Connect())
                {
                    // Status before events: a terminal status is committed with its final event,
                    // so reading it first guarantees the final event is in this batch.
                    terminal = JobStatus.IsTerminal(JobRows.Find(conn, null, org, id)!.Wire.Status);
                    batch = JobEvents.Read(conn, id, since, 1000);
                }
                foreach (var e in batch)
                {
                    await http.Response.WriteAsync($"id: {e.Seq}\nevent: {e.Type}\ndata: {JsonSerializer.Serialize(e, AnnealJson.Options)}\n\n", ct);
                    since = e.Seq;
                }
                if (batch.Count > 0)
                {
                    await http.Response.Body.FlushAsync(ct);
                    idleSince = DateTime.UtcNow;
                }
                if (terminal && batch.Count < 1000) break;
                if (batch.Count == 0)
                {
                    // An idle stream sleeps until an event is appended here (any job: one notifier
                    // for all streams) or, on a shared store, until the next look; it sends a
                    // keep-alive now and then.
                    try { await wake.WaitAsync(db.Shared ? SharedStorePoll : KeepAliveInterval, ct); }
                    catch (TimeoutException) when (DateTime.UtcNow - idleSince < KeepAliveInterval) { }
                    catch (TimeoutException)
                    {
                        await http.Response.WriteAsync(": keep-alive\n\n", ct);
                        await http.Response.Body.FlushAsync(ct);
                        idleSince = DateTime.UtcNow;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        return TypedResults.Empty;
    }
}
