// Resumable artifact uploads from workers (PUT/HEAD /api/workers/jobs/{id}/artifacts/{path}), in the
// manner of tus and S3 multipart kept to one request shape: each PUT carries one chunk with
//   Content-Range: bytes START-END/TOTAL     (END inclusive, as in HTTP ranges)
//   X-Content-SHA256: <hex sha256 of the whole TOTAL bytes>
// and the server appends it to a partial file of its own for (job, attempt, path, sha256) only if
// START equals the bytes it already has; otherwise it answers 409 upload_offset_mismatch with
// Upload-Offset: <bytes it has>. A HEAD with the same query and sha256 header answers Upload-Offset
// too, so a worker whose connection broke mid-chunk resumes at the exact byte the server kept
// (a chunk cut short keeps what arrived). The chunk that completes TOTAL bytes is checked against
// the sha256 and then handed to the swap WorkersApi.Upload does for a whole body.
// One writer per partial file: it is opened with FileShare.None, so a retry that arrives while the
// broken request is still being read gets 503 (Retry-After: 1) instead of interleaving bytes.
// Partial files live in tmp/ as upload-{job}-a{attempt}-{path}-{sha prefix}.partial: a different
// sha256 (the worker tarred the folder again) starts a file of its own from 0. They are removed
// when their chunk completes, when their attempt no longer holds the job (SweepAbandoned: at each
// claim, exit and refused chunk), and by StartupSweep with everything else in tmp/.
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Workers;

/// <summary>A parsed `Content-Range: bytes START-END/TOTAL` of one upload chunk.</summary>
public readonly partial record struct ChunkRange(long Start, long End, long Total)
{
    public long Length => End - Start + 1;

    public const string Expected = "bytes START-END/TOTAL with 0 ≤ START ≤ END < TOTAL (e.g. bytes 0-16777215/52428800)";

    /// <summary>The range, or the reason the header is not one.</summary>
    public static (ChunkRange? Range, string? Error) Parse(string header)
    {
        var m = Pattern().Match(header.Trim());
        if (!m.Success) return (null, $"header Content-Range '{header}': expected {Expected}");
        static long? Number(Group g) => long.TryParse(g.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : null;
        if (Number(m.Groups[1]) is not { } start || Number(m.Groups[2]) is not { } end || Number(m.Groups[3]) is not { } total)
            return (null, $"header Content-Range '{header}': a number is too large");
        if (start > end || end >= total)
            return (null, $"header Content-Range '{header}': expected {Expected}");
        return (new ChunkRange(start, end, total), null);
    }

    public override string ToString() => $"bytes {Start}-{End}/{Total}";

    [GeneratedRegex(@"^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})$")]
    private static partial Regex Pattern();
}

public static partial class ArtifactUploads
{
    /// <summary>Response header (HEAD, chunk answers, offset mismatches): the bytes of the upload the server has.</summary>
    public const string OffsetHeader = "Upload-Offset";
    public const string OffsetMismatch = "upload_offset_mismatch";

    /// <summary>The partial file of one upload: its attempt, its artifact path and the sha256 it must end with.</summary>
    public static string PartialPath(Db db, string jobId, long attempt, string path, string sha256) =>
        Path.Combine(db.TmpDir, $"upload-{jobId}-a{attempt}-{path.Replace('/', '_')}-{sha256[..16]}.partial");

    /// <summary>Opens the partial file as its only writer; null while another request writes it.</summary>
    public static FileStream? OpenExclusive(string partial)
    {
        try { return new FileStream(partial, DataDirPermissions.NewFile(FileMode.OpenOrCreate, FileAccess.ReadWrite, FileOptions.None)); }
        catch (IOException) when (File.Exists(partial)) { return null; }
    }

    /// <summary>Bytes of the upload the server has now (0: none); null while a request writes it.</summary>
    public static long? Offset(string partial)
    {
        if (!File.Exists(partial)) return 0;
        try
        {
            using var file = new FileStream(partial, FileMode.Open, FileAccess.Read, FileShare.None);
            return file.Length;
        }
        catch (FileNotFoundException) { return 0; }
        catch (IOException) { return null; }
    }

    public enum Appended { Complete, Incomplete, TooLong, Interrupted }

    /// <summary>
    /// Appends the request body (the chunk <paramref name="range"/>, which starts at the file's end)
    /// to <paramref name="file"/>. A body longer than the range is refused and nothing of it kept; a
    /// body cut short (the connection broke) keeps what arrived, so the upload resumes there.
    /// </summary>
    public static async Task<Appended> AppendAsync(FileStream file, ChunkRange range, Stream body, Action<long> counted, CancellationToken ct)
    {
        var start = file.Length;
        file.Position = start;
        var buffer = new byte[81920];
        long received = 0;
        try
        {
            int n;
            while ((n = await body.ReadAsync(buffer, ct)) > 0)
            {
                if (received + n > range.Length)
                {
                    file.SetLength(start);
                    return Appended.TooLong;
                }
                received += n;
                counted(n);
                // Written whatever happens to the request from here on: a broken connection keeps what arrived.
                await file.WriteAsync(buffer.AsMemory(0, n), CancellationToken.None);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            await file.FlushAsync(CancellationToken.None);
            return Appended.Interrupted;
        }
        await file.FlushAsync(CancellationToken.None);
        return received < range.Length ? Appended.Incomplete : Appended.Complete;
    }

    public static async Task<string> Sha256Async(FileStream file, CancellationToken ct)
    {
        file.Position = 0;
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(file, ct));
    }

    /// <summary>
    /// Removes partial uploads whose attempt no longer holds its job (the lease lapsed, a newer
    /// attempt claimed it, or the job finished or was cancelled): nobody can complete them.
    /// </summary>
    public static int SweepAbandoned(Db db)
    {
        var partials = Directory.EnumerateFiles(db.TmpDir, "upload-*.partial").ToList();
        if (partials.Count == 0) return 0;
        using var conn = db.Connect();
        var removed = 0;
        foreach (var partial in partials)
        {
            var m = PartialName().Match(Path.GetFileName(partial));
            if (!m.Success) continue;
            var live = Db.Scalar<long>(conn, null, "SELECT COUNT(*) FROM jobs WHERE id = @id AND status = 'running' AND attempt = @a",
                ("@id", m.Groups[1].Value), ("@a", long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture))) > 0;
            if (live) continue;
            try
            {
                File.Delete(partial);
                removed++;
            }
            catch (IOException) { }
        }
        return removed;
    }

    [GeneratedRegex(@"^upload-([a-z]+_[a-z2-7]+)-a([0-9]{1,18})-.+\.partial$")]
    private static partial Regex PartialName();
}
