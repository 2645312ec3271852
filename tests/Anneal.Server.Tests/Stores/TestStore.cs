// Which store the server and CLI tests run on: SQLite (default) or, with ANNEAL_TEST_DATABASE=postgres,
// a database of its own per test server (per data folder) on the throw-away cluster. CI runs the
// server tests and the CLI's end-to-end tests both ways; the CLI project links this file.
using Anneal.Server.Storage;

namespace Anneal.Server.Tests.Stores;

public static class TestStore
{
    public static bool IsPostgres => string.Equals(Environment.GetEnvironmentVariable("ANNEAL_TEST_DATABASE"), "postgres", StringComparison.OrdinalIgnoreCase);

    /// <summary>The `Database` option for a new test server: null (SQLite in its data folder) or a fresh PostgreSQL database.</summary>
    public static string? NewDatabase() => IsPostgres ? TestPostgres.Shared.CreateDatabase() : null;

    /// <summary>
    /// The `Database` option for a server on <paramref name="dataDir"/>: null on SQLite; on PostgreSQL the
    /// database the folder already belongs to (a restart on the same folder finds its store again), else a fresh one.
    /// </summary>
    public static string? DatabaseFor(string dataDir) => IsPostgres ? DatabaseUrl.Recorded(dataDir) ?? TestPostgres.Shared.CreateDatabase() : null;

    /// <summary>`--database URL` for `anneal serve` on <paramref name="dataDir"/>, or nothing on SQLite.</summary>
    public static string[] ServeOptions(string dataDir) => DatabaseFor(dataDir) is { } url ? ["--database", url] : [];
}

/// <summary>A test of what only the SQLite store does (its file, the data-folder lock): skipped when the suite runs on PostgreSQL.</summary>
public sealed class SqliteFactAttribute : FactAttribute
{
    public SqliteFactAttribute() : this("inspects the SQLite file itself") { }

    /// <param name="reason">Why the test means SQLite only, for the skip message.</param>
    public SqliteFactAttribute(string reason)
    {
        if (TestStore.IsPostgres) Skip = reason + " (the suite runs on PostgreSQL)";
    }
}

/// <summary>A test of several servers on one shared store: runs in the PostgreSQL pass (ANNEAL_TEST_DATABASE=postgres).</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        if (!TestStore.IsPostgres) Skip = "needs the shared store: runs with ANNEAL_TEST_DATABASE=postgres";
    }
}
