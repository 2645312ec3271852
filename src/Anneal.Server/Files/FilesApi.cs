// Files resource (DESIGN §3 "Files"): upload, get, list, delete. Aliases /api/files for upload and get.
using System.Data.Common;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Files;

public static class FilesApi
{
    public static IEndpointRouteBuilder MapFilesApi(this IEndpointRouteBuilder api)
    {
        var files = api.MapGroup("/learning/files");
        files.MapPost("/", FileUpload.Upload).DisableAntiforgery();
        files.MapGet("/", List);
        files.MapGet("/{id}", Get);
        files.MapDelete("/{id}", Delete);

        var alias = api.MapGroup("/files");
        alias.MapPost("/", FileUpload.Upload).DisableAntiforgery();
        alias.MapGet("/", List);
        alias.MapGet("/{id}", Get);
        alias.MapDelete("/{id}", Delete);
        return api;
    }

    static Results<Ok<FileObject>, ProblemHttpResult> Get(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        return FileRows.Find(conn, null, http.Org(), id) is { } file ? TypedResults.Ok(file) : Problems.NotFound("file", id);
    }

    static Results<Ok<FileList>, ProblemHttpResult> List(HttpContext http, Db db, string? limit, string? after)
    {
        if (!Paging.TryLimit(limit, out var n, out var problem)) return problem;
        using var conn = db.Connect();
        var org = http.Org();
        long? cursor = null;
        if (!string.IsNullOrEmpty(after))
        {
            cursor = Db.Scalar<long?>(conn, null, "SELECT rowid FROM files WHERE id = @id AND org = @org", ("@id", after), ("@org", org));
            if (cursor is null) return Problems.BadRequest($"after: no file with id '{after}'.", [new ErrorItem(null, "after", $"unknown file id '{after}'")]);
        }
        // Newest first; `after` continues with files older than the cursor.
        var rows = Db.Query(conn, null, $"""
            SELECT {FileRows.Columns} FROM files
            WHERE org = @org AND (@cursor IS NULL OR rowid < @cursor)
            ORDER BY rowid DESC LIMIT @take
            """, FileRows.Map, ("@org", org), ("@cursor", cursor), ("@take", n + 1));
        var page = Paging.TakeWithinBytes(rows.Take(n), f => Db.ToJson(f)!.Length);
        return TypedResults.Ok(new FileList(page, rows.Count > page.Count));
    }

    static async Task<Results<Ok<DeletedObject>, ProblemHttpResult>> Delete(string id, HttpContext http, Db db, ILoggerFactory logs)
    {
        var org = http.Org();
        using var conn = db.Connect();
        using var tx = Db.Begin(conn);
        var file = FileRows.Find(conn, tx, org, id);
        if (file is null) return Problems.NotFound("file", id);
        var activeJob = Db.Scalar<string>(conn, tx, """
            SELECT id FROM jobs WHERE org = @org AND (training_file_id = @id OR validation_file_id = @id)
            AND status NOT IN ('succeeded', 'failed', 'cancelled') LIMIT 1
            """, ("@org", org), ("@id", id));
        if (activeJob is not null)
            return Problems.Make(409, ErrorCodes.InvalidState, "File in use",
                $"File '{id}' is used by job '{activeJob}', which has not finished; cancel the job or wait for it first.");
        Db.Exec(conn, tx, "DELETE FROM files WHERE id = @id", ("@id", id));
        tx.Commit();
        // The bytes go only after the row is gone for good (a crash in between leaves an orphan blob,
        // swept on start, never a row without bytes). The blob is shared by every row with the same
        // sha256 (any org): removed with the last one, checked in a write transaction so an upload
        // of the same bytes cannot commit its row in between.
        // The object store's copy and the fetched images go with them (FileBlobs).
        using (var blobTx = Db.Begin(conn))
        {
            if (Db.Scalar<long>(conn, blobTx, "SELECT COUNT(*) FROM files WHERE sha256 = @sha", ("@sha", file.Sha256)) == 0)
            {
                try { await FileBlobs.DeleteAsync(db, file.Sha256, CancellationToken.None); }
                catch (ObjectStoreException e)
                {
                    // The file is deleted for the user; what is left is an orphan object, which costs only storage.
                    logs.CreateLogger(typeof(FilesApi)).LogWarning(e, "File {FileId}: its bytes stay in the object store as an orphan", id);
                }
            }
            blobTx.Commit();
        }
        return TypedResults.Ok(new DeletedObject(id, "file", true));
    }
}
