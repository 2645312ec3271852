// A dataset's bytes (files/<sha256>) and its fetched https images (files/<sha256>.images/) on
// this server, wherever the object store keeps them (Storage/ObjectFiles.cs): a server that lacks
// them (an empty cache, another host) fetches both before a trainer or a worker reads them, and the
// last row using the bytes takes them out of the store with it.
using Anneal.Core.Contracts;
using Anneal.Core.Vision;
using Anneal.Server.Http;
using Anneal.Server.Storage;

namespace Anneal.Server.Files;

public static class FileBlobs
{
    /// <summary>The dataset's local path with its images beside it, fetched when missing; null when the store has no such bytes.</summary>
    public static async Task<string?> EnsureLocalAsync(Db db, string sha256, CancellationToken ct)
    {
        var blob = FileRows.BlobPath(db, sha256);
        if (!await ObjectFiles.EnsureAsync(db, blob, sha256, ct)) return null;
        await ObjectFiles.EnsureFolderAsync(db, StoredImages.FolderFor(blob), ct);
        return blob;
    }

    /// <summary>Removes the bytes and their images, here and in the store.</summary>
    public static async Task DeleteAsync(Db db, string sha256, CancellationToken ct)
    {
        var blob = FileRows.BlobPath(db, sha256);
        await ObjectFiles.DeleteAsync(db, blob, ct);
        await ObjectFiles.DeleteFolderAsync(db, StoredImages.FolderFor(blob), ct);
    }

    /// <summary>
    /// Endpoint filter for routes that read a ready file's bytes by `{id}` (the workers' file
    /// downloads): brings them into this server's data folder first, or answers 502 naming what
    /// the store did wrong (a damaged object is never served).
    /// </summary>
    public static async ValueTask<object?> EnsureCached(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        var http = ctx.HttpContext;
        var db = http.RequestServices.GetRequiredService<Db>();
        if (!db.Objects.IsDataFolder && http.Request.RouteValues["id"] is string id)
        {
            string? sha;
            using (var conn = db.Connect())
                sha = Db.Scalar<string>(conn, null, "SELECT sha256 FROM files WHERE id = @id AND status = @s", ("@id", id), ("@s", FileStatus.Ready));
            if (sha is not null)
            {
                try { await EnsureLocalAsync(db, sha, http.RequestAborted); }
                catch (ObjectStoreException e) { return Problems.ObjectStore($"file '{id}': {e.Message}"); }
            }
        }
        return await next(ctx);
    }
}
