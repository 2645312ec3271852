// A throw-away PostgreSQL cluster for the tests: initdb into a temp folder, a free loopback port,
// its Unix socket in that folder, trust authentication; stopped when the test process exits (and
// by a watchdog if the process dies without exiting cleanly). As root it runs as the `postgres`
// user, since PostgreSQL refuses to run as root. Every test server gets a database of its own.
// The binaries come from ANNEAL_PG_BIN, /usr/lib/postgresql/<newest>/bin, or PATH.
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Anneal.Server.Tests.Stores;

public sealed class TestPostgres : IDisposable
{
    const string User = "anneal";
    static readonly Lazy<TestPostgres> Lazy = new(Start, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>One cluster per test process, started on first use.</summary>
    public static TestPostgres Shared => Lazy.Value;

    readonly string _bin;
    readonly string _root;
    public int Port { get; }
    string DataPath => Path.Combine(_root, "data");

    TestPostgres(string bin, string root, int port) => (_bin, _root, Port) = (bin, root, port);

    /// <summary>A new, empty database as a postgres:// URL for `--database`.</summary>
    public string CreateDatabase()
    {
        var name = "t" + Guid.NewGuid().ToString("n")[..16];
        using var conn = new NpgsqlConnection($"Host=127.0.0.1;Port={Port};Username={User};Database=postgres;Pooling=false");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"CREATE DATABASE {name}";
        cmd.ExecuteNonQuery();
        return $"postgres://{User}@127.0.0.1:{Port}/{name}";
    }

    static TestPostgres Start()
    {
        var bin = FindBin() ?? throw new InvalidOperationException(
            "PostgreSQL's initdb was not found (set ANNEAL_PG_BIN, or install the postgresql package: test.sh does)");
        var root = Path.Combine(Path.GetTempPath(), "anneal-pg-" + Guid.NewGuid().ToString("n")[..8]);
        Directory.CreateDirectory(root);
        var asRoot = Environment.UserName == "root";
        if (asRoot) Run("chown", ["postgres", root], asPostgres: false);
        var port = FreePort();
        var pg = new TestPostgres(bin, root, port);
        Run(Path.Combine(bin, "initdb"), ["-D", pg.DataPath, "-U", User, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], asRoot);
        // Durability is not under test here: no fsync, so the cluster keeps up on a small CI machine.
        var settings = $"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400";
        Run(Path.Combine(bin, "pg_ctl"), ["-D", pg.DataPath, "-l", Path.Combine(root, "log"), "-o", settings, "-w", "-t", "60", "start"], asRoot);
        // Stops the cluster when this process is gone, however it ended.
        var watchdog = $"while [ -d /proc/{Environment.ProcessId} ]; do sleep 1; done; '{Path.Combine(bin, "pg_ctl")}' -D '{pg.DataPath}' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'";
        var psi = new ProcessStartInfo("setsid") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in asRoot ? ["runuser", "-u", "postgres", "--", "sh", "-c", watchdog] : new[] { "sh", "-c", watchdog }) psi.ArgumentList.Add(a);
        Process.Start(psi);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => pg.Dispose();
        return pg;
    }

    public void Dispose()
    {
        try { Run(Path.Combine(_bin, "pg_ctl"), ["-D", DataPath, "-m", "immediate", "stop"], Environment.UserName == "root"); }
        catch (InvalidOperationException) { }
    }

    /// <summary>Whether PostgreSQL's binaries are installed here (tests that need a cluster skip without them).</summary>
    public static bool Available => FindBin() is not null;

    static string? FindBin()
    {
        if (Environment.GetEnvironmentVariable("ANNEAL_PG_BIN") is { Length: > 0 } env) return env;
        const string debian = "/usr/lib/postgresql";
        if (Directory.Exists(debian))
        {
            var newest = Directory.GetDirectories(debian)
                .Where(d => File.Exists(Path.Combine(d, "bin", "initdb")))
                .OrderByDescending(d => int.TryParse(Path.GetFileName(d), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : 0)
                .FirstOrDefault();
            if (newest is not null) return Path.Combine(newest, "bin");
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "initdb")) && File.Exists(Path.Combine(dir, "pg_ctl"))) return dir;
        return null;
    }

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    static void Run(string file, string[] args, bool asPostgres)
    {
        var psi = new ProcessStartInfo(asPostgres ? "runuser" : file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        if (asPostgres) foreach (var a in new[] { "-u", "postgres", "--", file }) psi.ArgumentList.Add(a);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new InvalidOperationException($"{file} did not finish in 2 minutes"); }
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed (exit {p.ExitCode}): {stderr.Result}{stdout.Result}");
    }
}
