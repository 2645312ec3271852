// Endpoints for operators and their tools, without an API key (they reveal counts, never ids):
//   GET /healthz  liveness: the process answers (200).
//   GET /readyz   readiness: the store answers a query within 5 s (200), else 503 naming why; a
//                 load balancer sends requests only to ready servers.
//   GET /metrics  Prometheus text format: jobs by status (queue depth), this server's trainer
//                 processes, running jobs by lease state and holder (servers, workers), stored
//                 upload bytes and worker artifact bytes received.
using System.Globalization;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Operations;

/// <summary>Counters of this server process since it started.</summary>
public sealed class OperationsCounters
{
    long _artifactBytes;
    public long ArtifactBytes => Interlocked.Read(ref _artifactBytes);
    public void AddArtifactBytes(long n) => Interlocked.Add(ref _artifactBytes, n);
    long _leaseRefusals;
    /// <summary>Worker calls (heartbeat, lines, exit, upload) answered 409 lease_lost: late writes of a fenced attempt.</summary>
    public long LeaseRefusals => Interlocked.Read(ref _leaseRefusals);
    public void AddLeaseRefusal() => Interlocked.Increment(ref _leaseRefusals);
}

public static class OperationsApi
{
    public static IEndpointRouteBuilder MapOperationsApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", () => TypedResults.Ok(new { status = "ok" }));
        app.MapGet("/readyz", Ready);
        app.MapGet("/metrics", Metrics);
        return app;
    }

    static async Task<IResult> Ready(Db db)
    {
        try
        {
            var check = Task.Run(() =>
            {
                using var conn = db.Connect();
                return Db.Scalar<long>(conn, null, "SELECT COUNT(*) FROM schema_version");
            });
            if (await Task.WhenAny(check, Task.Delay(TimeSpan.FromSeconds(5))) != check)
                return Results.Json(new { status = "unavailable", store = db.Dialect.Name, reason = "the store did not answer within 5 s" }, statusCode: 503);
            await check;
            return Results.Ok(new { status = "ready", store = db.Dialect.Name });
        }
        catch (Exception e) when (e is System.Data.Common.DbException or InvalidOperationException or IOException or System.Net.Sockets.SocketException)
        {
            return Results.Json(new { status = "unavailable", store = db.Dialect.Name, reason = e.Message }, statusCode: 503);
        }
    }

    static IResult Metrics(Db db, JobScheduler scheduler, OperationsCounters counters)
    {
        using var conn = db.Connect();
        var byStatus = Db.Query(conn, null, "SELECT status, COUNT(*) FROM jobs GROUP BY status", r => (r.GetString(0), r.GetInt64(1)))
            .ToDictionary(x => x.Item1, x => x.Item2);
        var leases = Db.Query(conn, null, $"""
            SELECT CASE WHEN lease_owner LIKE 'worker:%' THEN 'worker' ELSE 'server' END,
                   CASE WHEN lease_until IS NOT NULL AND lease_until >= {db.Dialect.NowMs} THEN 'live' ELSE 'lapsed' END,
                   COUNT(*)
            FROM jobs WHERE status = @s GROUP BY 1, 2
            """, r => (Holder: r.GetString(0), State: r.GetString(1), Count: r.GetInt64(2)), ("@s", JobStatus.Running));
        var uploadBytes = Db.Scalar<long?>(conn, null, "SELECT SUM(bytes) FROM files") ?? 0;

        var text = new StringBuilder();
        void Metric(string name, string type, string help, IEnumerable<(string Labels, long Value)> samples)
        {
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (labels, value) in samples)
                text.Append(name).Append(labels).Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        string[] statuses = [JobStatus.Created, JobStatus.Queued, JobStatus.Running, JobStatus.Paused, JobStatus.Succeeded, JobStatus.Failed, JobStatus.Cancelled];
        Metric("anneal_jobs", "gauge", "Jobs in the store by status.",
            statuses.Concat(byStatus.Keys.Except(statuses)).Select(s => ($"{{status=\"{s}\"}}", byStatus.GetValueOrDefault(s))));
        Metric("anneal_queue_depth", "gauge", "Jobs queued and waiting for a trainer.", [("", byStatus.GetValueOrDefault(JobStatus.Queued))]);
        Metric("anneal_trainer_processes", "gauge", "Trainer processes this server runs now.", [("", scheduler.RunningCount)]);
        Metric("anneal_job_leases", "gauge", "Running jobs by lease holder (server or worker) and state (live, or lapsed and awaiting recovery).",
            from holder in new[] { "server", "worker" }
            from state in new[] { "live", "lapsed" }
            select ($"{{holder=\"{holder}\",state=\"{state}\"}}", leases.Where(l => l.Holder == holder && l.State == state).Sum(l => l.Count)));
        Metric("anneal_upload_bytes", "gauge", "Bytes of uploaded files in the store.", [("", uploadBytes)]);
        Metric("anneal_worker_artifact_bytes_total", "counter", "Bytes of checkpoints and final models received from workers by this server.", [("", counters.ArtifactBytes)]);
        Metric("anneal_worker_lease_refusals_total", "counter", "Worker calls this server refused with 409 lease_lost (late writes of an attempt whose lease is gone).", [("", counters.LeaseRefusals)]);
        return Results.Text(text.ToString(), "text/plain; version=0.0.4; charset=utf-8");
    }
}
