// POST /api/learning/files: multipart (field `file`, form field `purpose`) streamed to a temp file
// while hashing, then renamed to files/<sha256> and committed. Memory use is one 80 KiB buffer
// whatever the upload size. Ordering for durability: file fsynced → renamed → directory fsynced
// → row committed; a crash in between leaves at worst an orphan temp file, never a row without bytes.
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace Anneal.Server.Files;

public static class FileUpload
{
    // Multipart framing (boundaries, part headers, the purpose field) on top of the file itself.
    const long MultipartOverhead = 64 * 1024;

    public static async Task<Results<Created<FileObject>, Ok<FileObject>, ProblemHttpResult>> Upload(
        HttpContext http, Db db, ServerOptions options, DatasetValidationQueue validation, CancellationToken ct)
    {
        var request = http.Request;
        var org = http.Org();
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType)
            || !mediaType.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            return Problems.BadRequest($"Expected a multipart/form-data body with a 'file' field, got Content-Type '{request.ContentType}'.");
        var boundary = HeaderUtilities.RemoveQuotes(mediaType.Boundary).Value;
        if (string.IsNullOrEmpty(boundary))
            return Problems.BadRequest("The multipart Content-Type has no boundary.");
        if (request.ContentLength is { } length && length > options.MaxUploadBytes + MultipartOverhead)
            return Problems.TooLarge(options.MaxUploadBytes);

        string? purpose = null;
        Stored? stored = null;
        try
        {
            var reader = new MultipartReader(boundary, request.Body);
            while (await reader.ReadNextSectionAsync(ct) is { } section)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition)) continue;
                var name = HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (name == "file" && stored is null)
                {
                    var fileName = HeaderUtilities.RemoveQuotes(disposition.FileNameStar.HasValue ? disposition.FileNameStar : disposition.FileName).Value;
                    var temp = Path.Combine(db.TmpDir, Ids.New("upload") + ".part");
                    try { stored = await SaveToTemp(temp, section.Body, options.MaxUploadBytes, ct); }
                    catch
                    {
                        // Client gone, too slow, over Kestrel's limit: a failed upload leaves nothing behind.
                        File.Delete(temp);
                        throw;
                    }
                    if (stored.TooLarge) return Problems.TooLarge(options.MaxUploadBytes);
                    stored = stored with { FileName = Path.GetFileName(string.IsNullOrWhiteSpace(fileName) ? "upload.jsonl" : fileName) };
                }
                else if (name == "purpose")
                {
                    using var sr = new StreamReader(section.Body, Encoding.UTF8);
                    var buffer = new char[256];
                    var n = await sr.ReadBlockAsync(buffer, ct);
                    purpose = new string(buffer, 0, n).Trim();
                }
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            Cleanup(stored);
            return Problems.BadRequest($"Malformed multipart body: {e.Message}");
        }
        catch
        {
            Cleanup(stored);
            throw;
        }

        if (stored is null)
            return Problems.BadRequest("The multipart body has no 'file' field.", [new ErrorItem(null, "file", "required")]);
        purpose ??= FilePurpose.FineTune;
        if (purpose != FilePurpose.FineTune)
        {
            Cleanup(stored);
            return Problems.BadRequest($"purpose '{purpose}' is not supported; expected '{FilePurpose.FineTune}'.",
                [new ErrorItem(null, "purpose", $"expected '{FilePurpose.FineTune}', got '{purpose}'")]);
        }
        if (stored.Bytes == 0)
        {
            Cleanup(stored);
            return Problems.BadRequest($"The file '{stored.FileName}' is empty (0 bytes); a dataset needs at least one JSONL example.",
                [new ErrorItem(null, "file", "empty file")]);
        }

        FileObject file;
        bool created;
        try { (file, created) = Commit(db, org, stored, purpose); }
        catch
        {
            Cleanup(stored);
            throw;
        }
        if (!created) return TypedResults.Ok(file);
        validation.Enqueue(file.Id);
        return TypedResults.Created($"/api/learning/files/{file.Id}", file);
    }

    sealed record Stored(string TempPath, long Bytes, string Sha256, bool TooLarge, string FileName = "");

    static async Task<Stored> SaveToTemp(string temp, Stream body, long maxBytes, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        var buffer = new byte[81920];
        await using (var fs = new FileStream(temp, DataDirPermissions.NewFile(FileMode.CreateNew, FileAccess.Write, FileOptions.Asynchronous)))
        {
            int n;
            while ((n = await body.ReadAsync(buffer, ct)) > 0)
            {
                total += n;
                if (total > maxBytes)
                {
                    await fs.DisposeAsync();
                    File.Delete(temp);
                    return new Stored(temp, total, "", TooLarge: true);
                }
                hash.AppendData(buffer, 0, n);
                await fs.WriteAsync(buffer.AsMemory(0, n), ct);
            }
            await fs.FlushAsync(ct);
            fs.Flush(flushToDisk: true);
        }
        return new Stored(temp, total, Convert.ToHexStringLower(hash.GetHashAndReset()), TooLarge: false);
    }

    static void Cleanup(Stored? stored)
    {
        if (stored is not null && File.Exists(stored.TempPath)) File.Delete(stored.TempPath);
    }

    static bool BlobMatches(string path, string sha256)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920);
        return Convert.ToHexStringLower(SHA256.HashData(stream)) == sha256;
    }

    /// <summary>Moves the temp file into files/ and inserts the row, or returns the org's existing file with the same sha256.</summary>
    static (FileObject File, bool Created) Commit(Db db, string org, Stored stored, string purpose)
    {
        using var conn = db.Connect();
        // IMMEDIATE transaction: serialises with DELETE, which removes a blob only when no row uses it.
        using var tx = conn.BeginTransaction();
        var existing = Db.Query(conn, tx, $"SELECT {FileRows.Columns} FROM files WHERE org = @org AND sha256 = @sha",
            FileRows.Map, ("@org", org), ("@sha", stored.Sha256)).FirstOrDefault();
        if (existing is not null)
        {
            tx.Rollback();
            Cleanup(stored);
            return (existing, false);
        }
        var blob = FileRows.BlobPath(db, stored.Sha256);
        // Same bytes already stored (another org, or a row deleted before its blob): trusted only
        // once re-hashed, so a blob damaged on disk is replaced rather than shared by the new row.
        if (File.Exists(blob) && BlobMatches(blob, stored.Sha256)) File.Delete(stored.TempPath);
        else
        {
            File.Move(stored.TempPath, blob, overwrite: true);
            Native.FsyncDirectory(db.FilesDir);
        }
        var id = Ids.New("file");
        Db.Exec(conn, tx, """
            INSERT INTO files (id, org, filename, bytes, sha256, purpose, status, created_at)
            VALUES (@id, @org, @name, @bytes, @sha, @purpose, @status, @t)
            """,
            ("@id", id), ("@org", org), ("@name", stored.FileName), ("@bytes", stored.Bytes), ("@sha", stored.Sha256),
            ("@purpose", purpose), ("@status", FileStatus.Processing), ("@t", Db.Now()));
        var file = FileRows.Find(conn, tx, org, id)!;
        tx.Commit();
        return (file, true);
    }
}
