// The store: SQLite (<data-dir>/anneal.db in WAL mode, the embedded default) or PostgreSQL
// (`--database postgres://…`, shared by several servers). Connections are opened per operation;
// SqlDialect holds the few differences. Files, job folders and models stay in the data folder,
// which servers sharing one PostgreSQL database also share, unless an object store holds them
// (Objects; then each server's data folder is its own cache).
using System.Data.Common;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using Anneal.Core.Contracts;

namespace Anneal.Server.Storage;

public sealed class Db : IDisposable
{
    public string DataDir { get; }
    public string FilesDir => Path.Combine(DataDir, "files");
    public string JobsDir => Path.Combine(DataDir, "jobs");
    public string TmpDir => Path.Combine(DataDir, "tmp");
    public SqlDialect Dialect { get; }
    /// <summary>Where files and job outputs are kept for good: the data folder itself (default) or a bucket the data folder caches (ObjectStore.cs).</summary>
    public IObjectStore Objects { get; set; }
    /// <summary>Several servers may share this store (PostgreSQL): no server owns every running job.</summary>
    public bool Shared => Dialect is SqlDialect.Postgres;

    /// <summary>A store on the data folder's SQLite file, or on <paramref name="database"/> (a postgres:// URL) when given.</summary>
    public Db(string dataDir, string? database = null)
    {
        DataDir = Path.GetFullPath(dataDir);
        Objects = new DataFolderStore(DataDir);
        Dialect = database is null
            ? new SqlDialect.Sqlite(Path.Combine(DataDir, "anneal.db"))
            : new SqlDialect.Postgres(DatabaseUrl.ToConnectionString(database));
    }

    /// <summary>Creates the folders and the database, and applies pending migrations.</summary>
    public static Db Open(string dataDir, string? database = null)
    {
        var db = new Db(dataDir, database);
        DataDirPermissions.CreateFolder(db.DataDir);
        DataDirPermissions.CreateFolder(db.FilesDir);
        DataDirPermissions.CreateFolder(db.JobsDir);
        DataDirPermissions.CreateFolder(db.TmpDir);
        if (!db.Shared) DataDirPermissions.CreateFile(Path.Combine(db.DataDir, "anneal.db"));
        try
        {
            using var conn = db.Connect();
            if (!db.Shared) Exec(conn, null, "PRAGMA journal_mode=WAL;");
            Migrate(conn, db.Dialect);
        }
        catch
        {
            db.Dispose();
            throw;
        }
        return db;
    }

    /// <summary>The store of an existing data folder: the PostgreSQL database it records (database.url), else its SQLite file.</summary>
    public static Db OpenDataDir(string dataDir) => Open(dataDir, DatabaseUrl.Recorded(dataDir));

    public DbConnection Connect() => Dialect.Open();

    public void Dispose()
    {
        Dialect.Dispose();
        Objects.Dispose();
    }

    /// <summary>A write transaction, serialised with every other Begin() on the store (see SqlDialect).</summary>
    public static DbTransaction Begin(DbConnection conn) => SqlDialect.Of(conn).BeginWrite(conn);

    /// <summary>A write transaction for work on one job that locks the job's row instead (see SqlDialect).</summary>
    public static DbTransaction BeginRowLocked(DbConnection conn) => SqlDialect.Of(conn).BeginRowLocked(conn);

    public static bool IsUniqueViolation(DbException e) => SqlDialect.Postgres.Instance.IsUniqueViolation(e) || SqlDialect.Sqlite.Instance.IsUniqueViolation(e);

    /// <summary>
    /// Applies the embedded Migrations/NNNN_name.sql scripts not yet in schema_version, each in its
    /// own transaction; NNNN_name.sqlite.sql / NNNN_name.postgres.sql run on that database only.
    /// </summary>
    static void Migrate(DbConnection conn, SqlDialect dialect)
    {
        using var migrationLock = dialect.MigrationLock(conn);
        Exec(conn, null, dialect.TranslateDdl("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"));
        var asm = Assembly.GetExecutingAssembly();
        var otherSuffixes = new SqlDialect[] { SqlDialect.Sqlite.Instance, SqlDialect.Postgres.Instance }
            .Where(d => d.Name != dialect.Name).Select(d => d.MigrationSuffix).ToList();
        var scripts = asm.GetManifestResourceNames()
            .Where(n => n.StartsWith("Migrations/", StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Where(n => !otherSuffixes.Any(s => n.EndsWith(s, StringComparison.Ordinal)))
            .Select(n => (Name: n, Version: int.Parse(n["Migrations/".Length..].Split('_')[0], CultureInfo.InvariantCulture)))
            .OrderBy(s => s.Version)
            .ToList();
        foreach (var (name, version) in scripts)
        {
            using var tx = conn.BeginTransaction();
            // Any version not applied yet (not only those above the highest): branches merged in
            // any order each bring their own numbers.
            if (Scalar<long>(conn, tx, "SELECT COUNT(*) FROM schema_version WHERE version = @v", ("@v", version)) > 0) { tx.Rollback(); continue; }
            using var reader = new StreamReader(asm.GetManifestResourceStream(name)!);
            Exec(conn, tx, dialect.TranslateDdl(reader.ReadToEnd()));
            Exec(conn, tx, "INSERT INTO schema_version (version, applied_at) VALUES (@v, @t)", ("@v", version), ("@t", Now()));
            tx.Commit();
        }
    }

    // ---- small helpers: every query in the server goes through these ----

    public static string Now() => DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    public static DateTimeOffset ParseTime(string s) => DateTimeOffset.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    public static DbCommand Command(DbConnection conn, DbTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        var postgres = conn is Npgsql.NpgsqlConnection;
        foreach (var (n, v) in args)
        {
            // PostgreSQL fixes an untyped parameter's type at its first use, so `@p IS NULL OR col = @p`
            // fails with a NULL; a NULL is written into the statement instead (it has no type to fix).
            if (postgres && v is null)
            {
                sql = Regex.Replace(sql, Regex.Escape(n) + "(?![A-Za-z0-9_])", "NULL");
                continue;
            }
            var p = cmd.CreateParameter();
            p.ParameterName = n;
            // Flags are stored as 0/1 integers on both databases.
            p.Value = v switch { null => DBNull.Value, bool b => b ? 1L : 0L, _ => v };
            cmd.Parameters.Add(p);
        }
        cmd.CommandText = sql;
        return cmd;
    }

    public static int Exec(DbConnection conn, DbTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        return cmd.ExecuteNonQuery();
    }

    public static T? Scalar<T>(DbConnection conn, DbTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        var v = cmd.ExecuteScalar();
        if (v is null or DBNull) return default;
        var target = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        return (T)Convert.ChangeType(v, target, CultureInfo.InvariantCulture);
    }

    public static List<T> Query<T>(DbConnection conn, DbTransaction? tx, string sql, Func<DbDataReader, T> map, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        using var r = cmd.ExecuteReader();
        var list = new List<T>();
        while (r.Read()) list.Add(map(r));
        return list;
    }

    public static string? Str(DbDataReader r, string col) { var i = r.GetOrdinal(col); return r.IsDBNull(i) ? null : r.GetString(i); }
    public static long? Long(DbDataReader r, string col) { var i = r.GetOrdinal(col); return r.IsDBNull(i) ? null : r.GetInt64(i); }

    public static string? ToJson<T>(T? value) => value is null ? null : JsonSerializer.Serialize(value, AnnealJson.Options);
    public static T? FromJson<T>(string? json) => json is null ? default : JsonSerializer.Deserialize<T>(json, AnnealJson.Options);
}
