// Which store the server tests run on: SQLite (default) or, with ANNEAL_TEST_DATABASE=postgres, a
// database of its own per test server on the throw-away cluster (CI runs this project both ways).
namespace Anneal.Server.Tests.Stores;

public static class TestStore
{
    public static bool IsPostgres => string.Equals(Environment.GetEnvironmentVariable("ANNEAL_TEST_DATABASE"), "postgres", StringComparison.OrdinalIgnoreCase);

    /// <summary>The `Database` option for a new test server: null (SQLite in its data folder) or a fresh PostgreSQL database.</summary>
    public static string? NewDatabase() => IsPostgres ? TestPostgres.Shared.CreateDatabase() : null;
}

/// <summary>A test that reads or damages the SQLite file itself: skipped when the suite runs on PostgreSQL.</summary>
public sealed class SqliteFactAttribute : FactAttribute
{
    public SqliteFactAttribute()
    {
        if (TestStore.IsPostgres) Skip = "inspects the SQLite file itself (the suite runs on PostgreSQL)";
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
