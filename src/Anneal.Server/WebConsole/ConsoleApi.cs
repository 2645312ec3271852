// The web console: static HTML/CSS/JS embedded in this assembly (WebConsole/assets/*), served at `/`
// and `/console/{name}`. No build step and nothing fetched from elsewhere, so it works offline.
// The pages call the same `/api` with the key the user signs in with (kept in sessionStorage by
// the browser), so the console sees exactly what that key's organisation may see.
// Assets are read once at start, with a gzip copy and an ETag each; a reload costs one 304 per file.
using System.Collections.Frozen;
using System.IO.Compression;
using System.Reflection;
using System.Security.Cryptography;

namespace Anneal.Server.WebConsole;

public static class ConsoleApi
{
    const string ResourcePrefix = "Console/";

    /// <summary>
    /// The pages load only this server's scripts and styles and talk only to this server; no
    /// inline script, so an injected string cannot run and read the key from sessionStorage.
    /// </summary>
    const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    sealed record Asset(string ContentType, byte[] Bytes, byte[] Gzip, string ETag);

    static readonly Lazy<FrozenDictionary<string, Asset>> Assets = new(LoadAssets);

    public static IEndpointRouteBuilder MapConsole(this IEndpointRouteBuilder app)
    {
        app.MapMethods("/", ["GET", "HEAD"], (HttpContext http) => Serve(http, "index.html")).ExcludeFromDescription();
        app.MapMethods("/console/{name}", ["GET", "HEAD"], (HttpContext http, string name) => Serve(http, name)).ExcludeFromDescription();
        return app;
    }

    /// <summary>The embedded asset names, e.g. "index.html", "app.js" (for tests and size checks).</summary>
    public static IReadOnlyCollection<string> AssetNames => Assets.Value.Keys;

    static IResult Serve(HttpContext http, string name)
    {
        if (!Assets.Value.TryGetValue(name, out var asset))
            return Results.Problem(statusCode: 404, title: "Not found", detail: $"The console has no file '{name}'.");
        var headers = http.Response.Headers;
        headers.ETag = asset.ETag;
        // Revalidate every time: a new server version must not run with last version's scripts.
        headers.CacheControl = "no-cache";
        headers.Vary = "Accept-Encoding";
        headers.XContentTypeOptions = "nosniff";
        headers["Referrer-Policy"] = "no-referrer";
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
        if (http.Request.Headers.IfNoneMatch.Contains(asset.ETag)) return Results.StatusCode(StatusCodes.Status304NotModified);
        if (http.Request.Headers.AcceptEncoding.ToString().Contains("gzip", StringComparison.OrdinalIgnoreCase))
        {
            headers.ContentEncoding = "gzip";
            return Results.Bytes(asset.Gzip, asset.ContentType);
        }
        return Results.Bytes(asset.Bytes, asset.ContentType);
    }

    static FrozenDictionary<string, Asset> LoadAssets()
    {
        var assembly = typeof(ConsoleApi).Assembly;
        var assets = new Dictionary<string, Asset>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            var bytes = Read(assembly, resource);
            using var gz = new MemoryStream();
            using (var zip = new GZipStream(gz, CompressionLevel.SmallestSize, leaveOpen: true)) zip.Write(bytes);
            var name = resource[ResourcePrefix.Length..];
            assets[name] = new Asset(ContentType(name), bytes, gz.ToArray(), $"\"{Convert.ToHexStringLower(SHA256.HashData(bytes))[..16]}\"");
        }
        return assets.ToFrozenDictionary(StringComparer.Ordinal);
    }

    static byte[] Read(Assembly assembly, string resource)
    {
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    static string ContentType(string name) => Path.GetExtension(name) switch
    {
        ".html" => "text/html; charset=utf-8",
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".svg" => "image/svg+xml",
        _ => "application/octet-stream",
    };
}
