// API keys: "ank_" + 256 random bits (base64url). Only the sha256 of a key is stored; a key
// belongs to one organisation and every resource is scoped to it. Usable without a running
// server (`anneal keys create --org NAME --data-dir DIR`).
using System.Security.Cryptography;
using System.Text;
using Anneal.Server.Http;
using Anneal.Server.Storage;

namespace Anneal.Server.Auth;

public static class ApiKeys
{
    public const string DefaultOrg = "default";
    const string OrgItem = "anneal.org";

    /// <summary>Creates a key for <paramref name="org"/> in the data dir's database and returns it (shown once).</summary>
    public static Task<string> CreateAsync(string dataDir, string org)
    {
        if (string.IsNullOrWhiteSpace(org)) throw new ArgumentException("organisation name must not be empty", nameof(org));
        return Task.FromResult(Create(Db.Open(dataDir), org.Trim()));
    }

    internal static string Create(Db db, string org)
    {
        var key = NewKey();
        using var conn = db.Connect();
        Db.Exec(conn, null, "INSERT INTO api_keys (id, org, key_hash, created_at) VALUES (@id, @org, @h, @t)",
            ("@id", Ids.New("key")), ("@org", org), ("@h", Hash(key)), ("@t", Db.Now()));
        return key;
    }

    /// <summary>On first start (no key at all) creates one for org "default" and returns it; otherwise null.</summary>
    internal static string? EnsureFirstKey(Db db)
    {
        using var conn = db.Connect();
        using var tx = conn.BeginTransaction();
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
            var org = Db.Scalar<string>(conn, null, "SELECT org FROM api_keys WHERE key_hash = @h", ("@h", Hash(header[7..].Trim())));
            if (org is null) return Problems.Unauthorized("Invalid API key.");
            http.Items[OrgItem] = org;
        }
        return await next(ctx);
    }

    /// <summary>The organisation of the authenticated caller (set by <see cref="Require"/>).</summary>
    public static string Org(this HttpContext http) =>
        http.Items[OrgItem] as string ?? throw new InvalidOperationException("endpoint is missing the ApiKeys.Require filter");
}
