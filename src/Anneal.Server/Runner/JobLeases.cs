// Ownership of running jobs, for several servers on one store. A claim moves the oldest queued job
// to running with (lease_owner, attempt + 1, lease_until); on PostgreSQL the inner SELECT skips rows
// other claimers hold (FOR UPDATE SKIP LOCKED), so concurrent claims never take the same job and
// never wait on each other. The owner renews the lease while its trainer runs; every write the run
// makes is fenced by Holds(), so a run that lost its lease (a stalled server whose job was
// recovered elsewhere, or a job cancelled through another server) changes nothing.
using System.Data.Common;
using Anneal.Core.Contracts;
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

/// <summary>A claim of one job: who holds it and which attempt it is (the fencing token).</summary>
public sealed record JobLease(string Owner, long Attempt);

public static class JobLeases
{
    /// <summary>A name for this process's claims, unique across hosts and restarts.</summary>
    public static string NewOwner() => $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid().ToString("n")[..8]}";

    /// <summary>Moves the oldest queued job to running under a new lease, in <paramref name="tx"/>; null when none is queued (or all are being claimed).</summary>
    public static (string JobId, JobLease Lease)? Claim(DbConnection conn, DbTransaction tx, string owner, TimeSpan duration)
    {
        var dialect = SqlDialect.Of(conn);
        var claimed = Db.Query(conn, tx, $"""
            UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, @t),
                            lease_owner = @owner, lease_until = {dialect.NowMs} + @ms, attempt = attempt + 1
            WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, rowid LIMIT 1 {dialect.SkipLocked})
              AND status = 'queued'
            RETURNING id, attempt
            """, r => (Id: r.GetString(0), Attempt: r.GetInt64(1)),
            ("@t", Db.Now()), ("@owner", owner), ("@ms", (long)duration.TotalMilliseconds));
        return claimed.Count == 0 ? null : (claimed[0].Id, new JobLease(owner, claimed[0].Attempt));
    }

    /// <summary>
    /// Like <see cref="Claim"/>, but takes the oldest queued job that <paramref name="fits"/> (given
    /// its metadata) among the first <paramref name="window"/> not being claimed by others; the
    /// jobs passed over are returned too, so the caller can say why they wait.
    /// </summary>
    public static ((string JobId, JobLease Lease)? Claimed, List<(string Id, string? Metadata)> PassedOver) ClaimFitting(
        DbConnection conn, DbTransaction tx, string owner, TimeSpan duration, Func<string?, bool> fits, int window = 32)
    {
        var dialect = SqlDialect.Of(conn);
        var candidates = Db.Query(conn, tx, $"""
            SELECT id, metadata FROM jobs WHERE status = 'queued' ORDER BY queued_at, rowid LIMIT @n {dialect.SkipLocked}
            """, r => (Id: r.GetString(0), Metadata: Db.Str(r, "metadata")), ("@n", window));
        var passed = new List<(string, string?)>();
        foreach (var (id, metadata) in candidates)
        {
            if (!fits(metadata))
            {
                passed.Add((id, metadata));
                continue;
            }
            var attempt = Db.Scalar<long?>(conn, tx, $"""
                UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, @t),
                                lease_owner = @owner, lease_until = {dialect.NowMs} + @ms, attempt = attempt + 1
                WHERE id = @id AND status = 'queued'
                RETURNING attempt
                """, ("@t", Db.Now()), ("@owner", owner), ("@ms", (long)duration.TotalMilliseconds), ("@id", id));
            if (attempt is { } a) return ((id, new JobLease(owner, a)), passed);
        }
        return (null, passed);
    }

    /// <summary>
    /// True while <paramref name="lease"/> still owns the running job; inside a transaction it also
    /// locks the job's row (PostgreSQL), so the writes that follow cannot race a recovery.
    /// </summary>
    public static bool Holds(DbConnection conn, DbTransaction? tx, string jobId, JobLease lease) =>
        Db.Exec(conn, tx, """
            UPDATE jobs SET lease_owner = lease_owner
            WHERE id = @id AND lease_owner = @owner AND attempt = @attempt AND status = 'running'
            """, ("@id", jobId), ("@owner", lease.Owner), ("@attempt", lease.Attempt)) == 1;

    /// <summary>Extends the lease; false when it was lost (recovered elsewhere, or the job left `running`).</summary>
    public static bool Renew(DbConnection conn, string jobId, JobLease lease, TimeSpan duration) =>
        Db.Exec(conn, null, $"""
            UPDATE jobs SET lease_until = {SqlDialect.Of(conn).NowMs} + @ms
            WHERE id = @id AND lease_owner = @owner AND attempt = @attempt AND status = 'running'
            """, ("@ms", (long)duration.TotalMilliseconds), ("@id", jobId), ("@owner", lease.Owner), ("@attempt", lease.Attempt)) == 1;

    /// <summary>Gives the lease up at once (graceful shutdown) so another server recovers the job without waiting for it to lapse.</summary>
    public static void Release(DbConnection conn, string jobId, JobLease lease) =>
        Db.Exec(conn, null, """
            UPDATE jobs SET lease_until = 0
            WHERE id = @id AND lease_owner = @owner AND attempt = @attempt AND status = 'running'
            """, ("@id", jobId), ("@owner", lease.Owner), ("@attempt", lease.Attempt));

    /// <summary>
    /// Running jobs whose lease has lapsed, oldest first; Released: handed back by a server that
    /// stopped (lease_until 0), or never leased, rather than expired.
    /// </summary>
    public static List<(string Id, bool Released)> Lapsed(DbConnection conn) =>
        Db.Query(conn, null, $"""
            SELECT id, lease_until FROM jobs WHERE status = @s AND (lease_until IS NULL OR lease_until < {SqlDialect.Of(conn).NowMs}) ORDER BY rowid
            """, r => (r.GetString(0), r.IsDBNull(1) || r.GetInt64(1) == 0), ("@s", JobStatus.Running));

    /// <summary>
    /// Takes a lapsed job over for recovery (the attempt stays, so the previous owner is fenced out
    /// by the owner change); false when its owner renewed meanwhile or another server took it first.
    /// </summary>
    public static bool TakeLapsed(DbConnection conn, string jobId, string owner, TimeSpan duration)
    {
        var nowMs = SqlDialect.Of(conn).NowMs;
        return Db.Exec(conn, null, $"""
            UPDATE jobs SET lease_owner = @owner, lease_until = {nowMs} + @ms
            WHERE id = @id AND status = 'running' AND (lease_until IS NULL OR lease_until < {nowMs})
            """, ("@owner", owner), ("@ms", (long)duration.TotalMilliseconds), ("@id", jobId)) == 1;
    }
}
