// API keys: "ank_" + 256 random bits (base64url). Only the sha256 of a key is stored; a key
// belongs to one organisation and every resource is scoped to it. Usable without a running
// server (`anneal keys create --org NAME --data-dir DIR`).
using System.Data.Common;
using System.Security.Cryptography;
using System.Text;
using Anneal.Server.Http;
using Anneal.Server.Storage;

namespace Anneal.Server.Auth;

public static class ApiKeys
{
    public const string DefaultOrg = "default";
    const string OrgItem = "anneal.org", KeyItem = "anneal.key";

    /// <summary>Creates a key for <paramref name="org"/> in the data dir's database and returns it (shown once).</summary>
    public static Task<string> CreateAsync(string dataDir, string org)
    {
        if (string.IsNullOrWhiteSpace(org)) throw new ArgumentException("organisation name must not be empty", nameof(org));
        return Task.FromResult(Create(Db.OpenDataDir(dataDir), org.Trim()));
    }

    internal static string Create(Db db, string org, bool admin = true) => CreateWithId(db, org, admin).Key;

    internal static (string Id, string Key) CreateWithId(Db db, string org, bool admin)
    {
        var key = NewKey();
        var id = Ids.New("key");
        using var conn = db.Connect();
        Db.Exec(conn, null, "INSERT INTO api_keys (id, org, key_hash, created_at, admin) VALUES (@id, @org, @h, @t, @admin)",
            ("@id", id), ("@org", org), ("@h", Hash(key)), ("@t", Db.Now()), ("@admin", admin));
        return (id, key);
    }

    /// <summary>The keys of one organisation (or of all), oldest first; never the key itself.</summary>
    public static List<ApiKeyInfo> List(string dataDir, string? org) => List(Db.OpenDataDir(dataDir), org);

    internal static List<ApiKeyInfo> List(Db db, string? org)
    {
        using var conn = db.Connect();
        return Db.Query(conn, null, "SELECT id, org, created_at, admin FROM api_keys WHERE @org IS NULL OR org = @org ORDER BY rowid",
            r => new ApiKeyInfo(r.GetString(0), "api_key", r.GetString(1), Db.ParseTime(r.GetString(2)), r.GetInt64(3) != 0), ("@org", org));
    }

    /// <summary>
    /// Revokes a key by id (of <paramref name="org"/> when given); false when there is none. Takes
    /// effect at once: every request looks its key up, nothing caches it.
    /// </summary>
    public static bool Revoke(string dataDir, string id, string? org = null) => Revoke(Db.OpenDataDir(dataDir), id, org);

    internal static bool Revoke(Db db, string id, string? org)
    {
        using var conn = db.Connect();
        return Db.Exec(conn, null, "DELETE FROM api_keys WHERE id = @id AND (@org IS NULL OR org = @org)", ("@id", id), ("@org", org)) == 1;
    }

    /// <summary>On first start (no key at all) creates one for org "default" and returns it; otherwise null.</summary>
    internal static string? EnsureFirstKey(Db db)
    {
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        if (Db.Scalar<long>(conn, tx, "SELECT COUNT(*) FROM api_keys") > 0) return null;
        var key = NewKey();
        Db.Exec(conn, tx, "INSERT INTO api_keys (id, org, key_hash, created_at) VALUES (@id, @org, @h, @t)",
            ("@id", Ids.New("key")), ("@org", DefaultOrg), ("@h", Hash(key)), ("@t", Db.Now()));
        tx.Commit();
        return key;
    }

    static string NewKey() =>
        "ank_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>Endpoint filter: resolves `Authorization: Bearer KEY` to an organisation or answers 401.</summary>
    public static async ValueTask<object?> Require(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        var http = ctx.HttpContext;
        var header = http.Request.Headers.Authorization.ToString();
        if (string.IsNullOrEmpty(header))
            return Problems.Unauthorized("Missing API key: send 'Authorization: Bearer <key>' (SYNTH_API_KEY).");
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            return Problems.Unauthorized("The Authorization header must be 'Bearer <key>'.");
        var db = http.RequestServices.GetRequiredService<Db>();
        using (var conn = db.Connect())
        {
            var key = Db.Query(conn, null, "SELECT org, id, admin FROM api_keys WHERE key_hash = @h",
                r => new CallerKey(r.GetString(0), r.GetString(1), r.GetInt64(2) != 0), ("@h", Hash(header[7..].Trim()))).FirstOrDefault();
            if (key is null) return Problems.Unauthorized("Invalid API key.");
            http.Items[OrgItem] = key.Org;
            http.Items[KeyItem] = key;
        }
        return await next(ctx);
    }

    /// <summary>The caller's key id and whether it is an admin key of its organisation.</summary>
    public static CallerKey Key(this HttpContext http) =>
        http.Items[KeyItem] as CallerKey ?? throw new InvalidOperationException("endpoint is missing the ApiKeys.Require filter");

    /// <summary>The organisation of the authenticated caller (set by <see cref="Require"/>).</summary>
    public static string Org(this HttpContext http) =>
        http.Items[OrgItem] as string ?? throw new InvalidOperationException("endpoint is missing the ApiKeys.Require filter");
}

/// <summary>The key that authenticated a request.</summary>
public sealed record CallerKey(string Org, string Id, bool Admin);

/// <summary>A key as listed (GET /api/keys, `anneal keys list`): never the key itself, which only its creator saw.</summary>
public sealed record ApiKeyInfo(string Id, string Object, string Org, DateTimeOffset CreatedAt, bool Admin);

/// <summary>A key just created over the API: the only time the key is shown.</summary>
public sealed record CreatedApiKey(string Id, string Object, string Org, bool Admin, string Key);
