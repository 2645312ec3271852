// The few places where the embedded store (SQLite) and the shared store (PostgreSQL) differ.
// Everything else — the schema, every query — is one SQL text that runs on both: upserts are
// `INSERT … ON CONFLICT`, times are ISO-8601 text, integers are 64-bit, and PostgreSQL tables get
// a `rowid` identity column (migration 0011_rowid.postgres.sql) so ordering by insertion reads the same.
//
// Write transactions: SQLite has one writer at a time (BEGIN IMMEDIATE), and several invariants of
// the server rely on it (a file deleted while a job is created from it, idempotency keys, the last
// admin key). On PostgreSQL, Begin() gives the same guarantee across every server on the database
// with a transaction-scoped advisory lock; the hot paths that only touch one job (claiming, the
// trainer's events and metrics) use BeginRowLocked() and lock that job's row instead.
using System.Data.Common;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Anneal.Server.Storage;

public abstract partial class SqlDialect : IDisposable
{
    public abstract string Name { get; }

    /// <summary>Opens a connection and applies per-connection settings.</summary>
    public abstract DbConnection Open();

    /// <summary>A write transaction serialised with every other one (SQLite's BEGIN IMMEDIATE).</summary>
    public abstract DbTransaction BeginWrite(DbConnection conn);

    /// <summary>A write transaction that relies on row locks only (PostgreSQL), or BeginWrite (SQLite).</summary>
    public virtual DbTransaction BeginRowLocked(DbConnection conn) => BeginWrite(conn);

    /// <summary>Appended to a `SELECT … LIMIT n` that picks rows to claim: concurrent claimers skip each other's rows.</summary>
    public abstract string SkipLocked { get; }

    /// <summary>A statement that locks one job's row until the transaction ends (@job), or null where writers are serialised anyway.</summary>
    public abstract string? LockJobRow { get; }

    /// <summary>The database clock in Unix milliseconds, as an SQL expression (leases compare against it, never a server's clock).</summary>
    public abstract string NowMs { get; }

    public abstract bool IsUniqueViolation(DbException e);

    /// <summary>The migration file suffix that only this dialect runs ("NNNN_name.{suffix}.sql").</summary>
    public string MigrationSuffix => "." + Name + ".sql";

    /// <summary>Column types of the shared migrations, as this database spells them.</summary>
    public virtual string TranslateDdl(string sql) => sql;

    /// <summary>Held while migrations run, so two servers starting together do not both apply one.</summary>
    public virtual IDisposable MigrationLock(DbConnection conn) => new Nothing();

    public virtual void Dispose() { }

    public static SqlDialect Of(DbConnection conn) => conn is NpgsqlConnection ? Postgres.Instance : Sqlite.Instance;

    sealed class Nothing : IDisposable { public void Dispose() { } }

    public sealed class Sqlite : SqlDialect
    {
        public static readonly Sqlite Instance = new(null);
        const int BusyTimeoutMs = 30_000;
        readonly string? _connectionString;

        public Sqlite(string? path) => _connectionString = path is null ? null : new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            DefaultTimeout = BusyTimeoutMs / 1000,
            Pooling = true,
        }.ToString();

        public override string Name => "sqlite";

        public override DbConnection Open()
        {
            var conn = new SqliteConnection(_connectionString ?? throw new InvalidOperationException("no SQLite file"));
            conn.Open();
            using var cmd = conn.CreateCommand();
            // synchronous=FULL: an acknowledged commit is on disk even if the machine loses power.
            cmd.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMs}; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;";
            cmd.ExecuteNonQuery();
            return conn;
        }

        // Microsoft.Data.Sqlite's default is BEGIN IMMEDIATE: the write lock is taken up front, so
        // concurrent writers wait on the busy timeout instead of failing on a read→write upgrade.
        public override DbTransaction BeginWrite(DbConnection conn) => ((SqliteConnection)conn).BeginTransaction(deferred: false);

        public override string SkipLocked => "";
        public override string? LockJobRow => null;
        public override string NowMs => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
        public override bool IsUniqueViolation(DbException e) => e is SqliteException { SqliteErrorCode: 19 };
    }

    public sealed partial class Postgres : SqlDialect
    {
        public static readonly Postgres Instance = new(null);
        // Arbitrary constants naming Anneal's advisory locks (the writer lock, the migration lock).
        const long WriterLockKey = 0x616e6e65616c_01;
        const long MigrationLockKey = 0x616e6e65616c_02;
        readonly NpgsqlDataSource? _source;

        public Postgres(string? connectionString) => _source = connectionString is null ? null : NpgsqlDataSource.Create(connectionString);

        public override string Name => "postgres";

        public override void Dispose() => _source?.Dispose();

        public override DbConnection Open() => (_source ?? throw new InvalidOperationException("no PostgreSQL database")).OpenConnection();

        public override DbTransaction BeginWrite(DbConnection conn)
        {
            var tx = conn.BeginTransaction();
            using var cmd = conn.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = $"SELECT pg_advisory_xact_lock({WriterLockKey})";
            // Writers queue here one at a time: a burst (50 uploads and job creations at once on a
            // loaded host) can wait longer than Npgsql's 30 s default, which would fail the request.
            cmd.CommandTimeout = 300;
            cmd.ExecuteNonQuery();
            return tx;
        }

        public override DbTransaction BeginRowLocked(DbConnection conn) => conn.BeginTransaction();

        public override string SkipLocked => "FOR UPDATE SKIP LOCKED";
        public override string LockJobRow => "SELECT 1 FROM jobs WHERE id = @job FOR UPDATE";
        public override string NowMs => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
        public override bool IsUniqueViolation(DbException e) => e is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation };

        // SQLite's INTEGER is 64-bit and REAL is a double; PostgreSQL's are 32-bit and single precision.
        public override string TranslateDdl(string sql) => Real().Replace(Integer().Replace(sql, "BIGINT"), "DOUBLE PRECISION");

        public override IDisposable MigrationLock(DbConnection conn)
        {
            Exec(conn, $"SELECT pg_advisory_lock({MigrationLockKey})");
            return new Unlock(conn);
        }

        sealed class Unlock(DbConnection conn) : IDisposable
        {
            public void Dispose() => Exec(conn, $"SELECT pg_advisory_unlock({MigrationLockKey})");
        }

        static void Exec(DbConnection conn, string sql)
        {
            using var cmd = conn.CreateCommand();
            cmd.CommandText = sql;
            cmd.ExecuteNonQuery();
        }

        [GeneratedRegex(@"\bINTEGER\b")]
        private static partial Regex Integer();

        [GeneratedRegex(@"\bREAL\b")]
        private static partial Regex Real();
    }
}
