// `--database postgres://user:password@host:port/dbname?sslmode=require&host=/run/postgresql`
// as an Npgsql connection string. The query may name any Npgsql keyword (`host` for a Unix socket
// folder, `sslmode`, `pooling`…); a password can also come from PGPASSWORD or ~/.pgpass, as libpq's.
using System.Data.Common;
using Npgsql;

namespace Anneal.Server.Storage;

public static class DatabaseUrl
{
    public static string ToConnectionString(string url)
    {
        // postgres://user@/db?host=/socket/folder names no host before the path: parse it with a stand-in.
        var noHost = url.Contains("@/", StringComparison.Ordinal) || url.Contains(":///", StringComparison.Ordinal);
        var parsed = noHost ? url.Replace("@/", "@socket.invalid/", StringComparison.Ordinal).Replace(":///", "://socket.invalid/", StringComparison.Ordinal) : url;
        if (!Uri.TryCreate(parsed, UriKind.Absolute, out var uri) || uri.Scheme is not ("postgres" or "postgresql"))
            throw new ArgumentException($"database '{Redact(url)}' is not a postgres://user@host:port/dbname URL");
        var b = new NpgsqlConnectionStringBuilder();
        if (!noHost) b.Host = Uri.UnescapeDataString(uri.Host);
        if (uri.Port > 0) b.Port = uri.Port;
        var userInfo = uri.UserInfo.Split(':', 2);
        if (userInfo[0].Length > 0) b.Username = Uri.UnescapeDataString(userInfo[0]);
        if (userInfo.Length == 2) b.Password = Uri.UnescapeDataString(userInfo[1]);
        var name = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        if (name.Length == 0) throw new ArgumentException($"database '{Redact(url)}' names no database: expected postgres://user@host:port/dbname");
        b.Database = name;
        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            var key = Uri.UnescapeDataString(kv[0]);
            try { b[key] = kv.Length == 2 ? Uri.UnescapeDataString(kv[1]) : ""; }
            catch (ArgumentException e) { throw new ArgumentException($"database '{Redact(url)}': option '{key}': {e.Message}"); }
        }
        if (b.Host is null or "") throw new ArgumentException($"database '{Redact(url)}' names no host: expected postgres://user@host:port/dbname or ?host=/socket/folder");
        return b.ConnectionString;
    }

    /// <summary>The URL without its password, for messages.</summary>
    public static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.UserInfo.Contains(':')
            ? url.Replace(uri.UserInfo, uri.UserInfo.Split(':')[0] + ":***", StringComparison.Ordinal)
            : url;

    /// <summary>
    /// &lt;data-dir&gt;/database.url (0600): the database a shared data folder belongs to, written by
    /// `anneal serve --database`. Local commands on the folder (`anneal keys`, `setup --data-dir`)
    /// open that database, and a server started on the folder without it is refused, since its
    /// start-up sweep would take the shared store's blobs for orphans.
    /// </summary>
    public static string RecordPath(string dataDir) => Path.Combine(Path.GetFullPath(dataDir), "database.url");

    public static string? Recorded(string dataDir) =>
        File.Exists(RecordPath(dataDir)) && File.ReadAllText(RecordPath(dataDir)).Trim() is { Length: > 0 } url ? url : null;

    public static void Record(string dataDir, string url)
    {
        if (Recorded(dataDir) == url) return;
        var path = RecordPath(dataDir);
        var tmp = path + ".tmp";
        File.Delete(tmp);
        using (var stream = new FileStream(tmp, DataDirPermissions.NewFile(FileMode.CreateNew, FileAccess.Write, FileOptions.None)))
        using (var writer = new StreamWriter(stream))
            writer.WriteLine(url);
        File.Move(tmp, path, overwrite: true);
    }

    public static bool IsPostgres(string? value) =>
        value is not null && (value.StartsWith("postgres://", StringComparison.Ordinal) || value.StartsWith("postgresql://", StringComparison.Ordinal));
}
