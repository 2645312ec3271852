// POST /api/learning/files: multipart (field `file`, form field `purpose`) streamed to a temp file
// while hashing and validating, in the same pass over each chunk (Core's DatasetCheck), then renamed
// to files/<sha256> and committed. Memory use is one 80 KiB buffer and the check's line buffer
// whatever the upload size. Ordering for durability: file fsynced → renamed → directory fsynced
// → row committed; a crash in between leaves at worst an orphan temp file, never a row without bytes.
// With an object store (`--object-store s3://…`) the bytes are put there before the row is
// committed, so a 201 means they are durable in the store, not only on this server's disk.
// The verdict is the answer: an invalid dataset is a 422 carrying its line-numbered errors (the
// first 20 and the total) and nothing is kept; a valid text dataset is `ready` in the 201 itself;
// one with images is `processing` until FileProcessing has fetched them.
using System.Data.Common;
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
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

    /// <summary>Errors shown in a refused upload's problem (all are counted).</summary>
    public const int MaxErrorsShown = 20;

    public static async Task<Results<Created<FileObject>, Ok<FileObject>, ProblemHttpResult>> Upload(
        HttpContext http, Db db, ServerOptions options, FileProcessingQueue processing, CancellationToken ct)
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
        if (!stored.Report!.IsValid)
        {
            Cleanup(stored);
            var report = stored.Report;
            var shown = report.Errors.Count < report.TotalErrors ? $"; the first {report.Errors.Count} are listed" : "";
            return Problems.Make(422, ErrorCodes.ValidationFailed, "Validation failed",
                $"The file '{stored.FileName}' is not a valid chat dataset: {report.TotalErrors} error{(report.TotalErrors == 1 ? "" : "s")}{shown}. Nothing was stored.",
                report.Errors, extra: new Dictionary<string, object?> { ["total_errors"] = report.TotalErrors });
        }

        FileObject file;
        bool created;
        try
        {
            // Acknowledged means durable in the object store: the bytes go there before the row.
            await Publish(db, stored, ct);
            (file, created) = await Commit(db, org, stored, purpose, ct);
        }
        catch (ObjectStoreException e)
        {
            Cleanup(stored);
            return Problems.ObjectStore($"The file '{stored.FileName}' could not be stored, nothing was kept: {e.Message}");
        }
        catch
        {
            Cleanup(stored);
            throw;
        }
        if (!created) return TypedResults.Ok(file);
        if (file.Status == FileStatus.Processing) processing.Enqueue(file.Id);
        return TypedResults.Created($"/api/learning/files/{file.Id}", file);
    }

    sealed record Stored(string TempPath, long Bytes, string Sha256, bool TooLarge, DatasetReport? Report = null, string FileName = "");

    static async Task<Stored> SaveToTemp(string temp, Stream body, long maxBytes, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        // Uploads are not tied to a model yet: image parts are accepted here and counted, so job
        // creation can refuse a text-only model for a file with images.
        using var check = new DatasetCheck(new DatasetValidationOptions(MaxErrorsShown, Vision: true));
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
                // The disk write proceeds while the same bytes are hashed and checked; the buffer
                // is only read by all three and refilled after the write completes.
                var write = fs.WriteAsync(buffer.AsMemory(0, n), ct);
                hash.AppendData(buffer, 0, n);
                check.Append(buffer.AsSpan(0, n));
                await write;
            }
            await fs.FlushAsync(ct);
            fs.Flush(flushToDisk: true);
        }
        return new Stored(temp, total, Convert.ToHexStringLower(hash.GetHashAndReset()), TooLarge: false, check.Complete());
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

    /// <summary>Puts the bytes into the object store under files/&lt;sha256&gt; unless it holds them already (nothing to do for the data folder).</summary>
    static async Task Publish(Db db, Stored stored, CancellationToken ct)
    {
        if (db.Objects.IsDataFolder) return;
        var blob = FileRows.BlobPath(db, stored.Sha256);
        if (await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, blob), ct) is { } head && head.Sha256 == stored.Sha256 && head.Bytes == stored.Bytes) return;
        await ObjectFiles.PublishAsync(db, blob, stored.Sha256, ct, from: stored.TempPath);
    }

    /// <summary>Moves the temp file into files/ and inserts the row, or returns the org's existing file with the same sha256.</summary>
    static async Task<(FileObject File, bool Created)> Commit(Db db, string org, Stored stored, string purpose, CancellationToken ct)
    {
        using var conn = db.Connect();
        // IMMEDIATE transaction: serialises with DELETE, which removes a blob only when no row uses it.
        using var tx = Db.Begin(conn);
        var existing = Db.Query(conn, tx, $"SELECT {FileRows.Columns} FROM files WHERE org = @org AND sha256 = @sha",
            FileRows.Map, ("@org", org), ("@sha", stored.Sha256)).FirstOrDefault();
        if (existing is not null)
        {
            tx.Rollback();
            Cleanup(stored);
            return (existing, false);
        }
        var blob = FileRows.BlobPath(db, stored.Sha256);
        // A DELETE of the last other row with these bytes may have taken them out of the store
        // after Publish; it did so in a write transaction, so once this one holds the lock the
        // object is either there for good or gone: put it back then (rare).
        if (!db.Objects.IsDataFolder && await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, blob), ct) is null)
            await ObjectFiles.PublishAsync(db, blob, stored.Sha256, ct, from: stored.TempPath);
        // Same bytes already stored (another org, or a row deleted before its blob): trusted only
        // once re-hashed, so a blob damaged on disk is replaced rather than shared by the new row.
        if (File.Exists(blob) && BlobMatches(blob, stored.Sha256)) File.Delete(stored.TempPath);
        else
        {
            File.Move(stored.TempPath, blob, overwrite: true);
            Native.FsyncDirectory(db.FilesDir);
        }
        var id = Ids.New("file");
        // The verdict is stored with the row: nothing reads the bytes again to validate them.
        var report = stored.Report!;
        var hasImages = report.ExamplesWithImages > 0;
        Db.Exec(conn, tx, """
            INSERT INTO files (id, org, filename, bytes, sha256, purpose, status, created_at, num_examples, errors, total_errors, has_images)
            VALUES (@id, @org, @name, @bytes, @sha, @purpose, @status, @t, @n, @errors, 0, @images)
            """,
            ("@id", id), ("@org", org), ("@name", stored.FileName), ("@bytes", stored.Bytes), ("@sha", stored.Sha256),
            ("@purpose", purpose), ("@status", hasImages ? FileStatus.Processing : FileStatus.Ready), ("@t", Db.Now()),
            ("@n", report.NumExamples), ("@errors", Db.ToJson(new List<ErrorItem>())), ("@images", hasImages));
        var file = FileRows.Find(conn, tx, org, id)!;
        tx.Commit();
        return (file, true);
    }
}
