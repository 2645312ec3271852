// Appending and reading job events. seq is per job, strictly increasing, assigned inside the
// INSERT (MAX+1). Writers of one job take turns: SQLite serialises all writers, and on PostgreSQL
// the append first locks the job's row (SqlDialect.LockJobRow), so servers sharing the database
// cannot read the same MAX; the (job_id, seq) primary key would reject a duplicate anyway.
using System.Data.Common;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Storage;

namespace Anneal.Server.Events;

public static class JobEvents
{
    public static long Append(DbConnection conn, DbTransaction? tx, string jobId, string type, string level, string message, JsonObject? data = null)
    {
        var dialect = SqlDialect.Of(conn);
        if (tx is null && dialect.LockJobRow is not null)
        {
            using var own = Db.BeginRowLocked(conn);
            var seq = Append(conn, own, jobId, type, level, message, data);
            own.Commit();
            return seq;
        }
        if (dialect.LockJobRow is { } lockRow) Db.Exec(conn, tx, lockRow, ("@job", jobId));
        return Db.Scalar<long>(conn, tx, """
            INSERT INTO job_events (job_id, seq, type, level, message, data, created_at)
            SELECT @job, COALESCE(MAX(seq), 0) + 1, @type, @level, @message, @data, @t FROM job_events WHERE job_id = @job
            RETURNING seq
            """,
            ("@job", jobId), ("@type", type), ("@level", level), ("@message", message),
            ("@data", data?.ToJsonString(AnnealJson.Options)), ("@t", Db.Now()));
    }

    public static List<JobEvent> Read(DbConnection conn, string jobId, long sinceSeq, int limit) =>
        Db.Query(conn, null, """
            SELECT seq, job_id, type, level, message, data, created_at FROM job_events
            WHERE job_id = @job AND seq > @since ORDER BY seq LIMIT @limit
            """,
            r => new JobEvent(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4),
                Db.Str(r, "data") is { } d ? JsonNode.Parse(d) as JsonObject : null, Db.ParseTime(r.GetString(6))),
            ("@job", jobId), ("@since", sinceSeq), ("@limit", limit));
}

/// <summary>Event types of the pause/resume transitions (not in Core's EventTypes yet).</summary>
/// <summary>
/// In-process wake-ups: SSE streams wait on <see cref="EventsAppended"/>, the scheduler on
/// <see cref="WorkAvailable"/>. Each is a pulse: waiters wake at the next Pulse() (or their timeout).
/// </summary>
public sealed class JobSignals
{
    public Pulse EventsAppended { get; } = new();
    public Pulse WorkAvailable { get; } = new();
}

public sealed class Pulse
{
    TaskCompletionSource _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Signal() => Interlocked.Exchange(ref _tcs, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    /// <summary>Completes at the next Signal(); take it before checking for work so a signal in between is not missed.</summary>
    public Task Next => Volatile.Read(ref _tcs).Task;

    public async Task WaitAsync(TimeSpan timeout, CancellationToken ct)
    {
        try { await Volatile.Read(ref _tcs).Task.WaitAsync(timeout, ct); }
        catch (TimeoutException) { }
    }
}
