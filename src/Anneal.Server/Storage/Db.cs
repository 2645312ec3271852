// The embedded store: one SQLite file (<data-dir>/anneal.db) in WAL mode, opened per operation.
// Writes use BEGIN IMMEDIATE transactions (Microsoft.Data.Sqlite's default) so concurrent writers
// wait on the busy timeout instead of failing on a read→write lock upgrade.
// A PostgreSQL store would keep the same schema and SQL shapes (see Runner/JobScheduler claim).
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Anneal.Core.Contracts;
using Microsoft.Data.Sqlite;

namespace Anneal.Server.Storage;

public sealed class Db
{
    const int BusyTimeoutMs = 30_000;
    readonly string _connectionString;

    public string DataDir { get; }
    public string FilesDir => Path.Combine(DataDir, "files");
    public string JobsDir => Path.Combine(DataDir, "jobs");
    public string TmpDir => Path.Combine(DataDir, "tmp");

    public Db(string dataDir)
    {
        DataDir = Path.GetFullPath(dataDir);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path.Combine(DataDir, "anneal.db"),
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            DefaultTimeout = BusyTimeoutMs / 1000,
            Pooling = true,
        }.ToString();
    }

    /// <summary>Creates the folders and the database, and applies pending migrations.</summary>
    public static Db Open(string dataDir)
    {
        var db = new Db(dataDir);
        DataDirPermissions.CreateFolder(db.DataDir);
        DataDirPermissions.CreateFolder(db.FilesDir);
        DataDirPermissions.CreateFolder(db.JobsDir);
        DataDirPermissions.CreateFolder(db.TmpDir);
        DataDirPermissions.CreateFile(Path.Combine(db.DataDir, "anneal.db"));
        using var conn = db.Connect();
        using (var wal = conn.CreateCommand())
        {
            wal.CommandText = "PRAGMA journal_mode=WAL;";
            wal.ExecuteNonQuery();
        }
        Migrate(conn);
        return db;
    }

    public SqliteConnection Connect()
    {
        var conn = new SqliteConnection(_connectionString);
        conn.Open();
        using var cmd = conn.CreateCommand();
        // synchronous=FULL: an acknowledged commit is on disk even if the machine loses power.
        cmd.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMs}; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;";
        cmd.ExecuteNonQuery();
        return conn;
    }

    /// <summary>Applies embedded Migrations/NNNN_name.sql scripts above the stored schema_version, each in its own transaction.</summary>
    static void Migrate(SqliteConnection conn)
    {
        Exec(conn, null, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
        var asm = Assembly.GetExecutingAssembly();
        var scripts = asm.GetManifestResourceNames()
            .Where(n => n.StartsWith("Migrations/", StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Select(n => (Name: n, Version: int.Parse(n["Migrations/".Length..].Split('_')[0], CultureInfo.InvariantCulture)))
            .OrderBy(s => s.Version)
            .ToList();
        foreach (var (name, version) in scripts)
        {
            using var tx = conn.BeginTransaction();
            var current = Scalar<long?>(conn, tx, "SELECT MAX(version) FROM schema_version") ?? 0;
            if (version <= current) { tx.Rollback(); continue; }
            using var reader = new StreamReader(asm.GetManifestResourceStream(name)!);
            Exec(conn, tx, reader.ReadToEnd());
            Exec(conn, tx, "INSERT INTO schema_version (version, applied_at) VALUES (@v, @t)", ("@v", version), ("@t", Now()));
            tx.Commit();
        }
    }

    // ---- small helpers: every query in the server goes through these ----

    public static string Now() => DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    public static DateTimeOffset ParseTime(string s) => DateTimeOffset.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    public static SqliteCommand Command(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (n, v) in args) cmd.Parameters.AddWithValue(n, v ?? DBNull.Value);
        return cmd;
    }

    public static int Exec(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        return cmd.ExecuteNonQuery();
    }

    public static T? Scalar<T>(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        var v = cmd.ExecuteScalar();
        if (v is null or DBNull) return default;
        var target = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        return (T)Convert.ChangeType(v, target, CultureInfo.InvariantCulture);
    }

    public static List<T> Query<T>(SqliteConnection conn, SqliteTransaction? tx, string sql, Func<SqliteDataReader, T> map, params (string, object?)[] args)
    {
        using var cmd = Command(conn, tx, sql, args);
        using var r = cmd.ExecuteReader();
        var list = new List<T>();
        while (r.Read()) list.Add(map(r));
        return list;
    }

    public static string? Str(SqliteDataReader r, string col) { var i = r.GetOrdinal(col); return r.IsDBNull(i) ? null : r.GetString(i); }
    public static long? Long(SqliteDataReader r, string col) { var i = r.GetOrdinal(col); return r.IsDBNull(i) ? null : r.GetInt64(i); }

    public static string? ToJson<T>(T? value) => value is null ? null : JsonSerializer.Serialize(value, AnnealJson.Options);
    public static T? FromJson<T>(string? json) => json is null ? default : JsonSerializer.Deserialize<T>(json, AnnealJson.Options);
}
