// The work on an uploaded dataset that takes longer than its upload: fetching the https images a
// valid dataset refers to (ImageFetching). The upload itself validated the bytes and stored the
// verdict; a file with images stays `processing` until a single worker, taking organisations in
// turn (first come first served within each), has fetched them, then marks it `ready`, or
// `failed` with the first 20 line-numbered errors and the total count. Files still `processing`
// when the server stopped are queued again on start; a row that was never validated (left by a
// version that validated after the upload) is validated here, once, with Core's DatasetCheck.
using System.Threading.Channels;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Server.Storage;

namespace Anneal.Server.Files;

public sealed class FileProcessingQueue
{
    readonly Channel<string> _ids = Channel.CreateUnbounded<string>();
    public void Enqueue(string fileId) => _ids.Writer.TryWrite(fileId);
    public ChannelReader<string> Reader => _ids.Reader;
}

public sealed class FileProcessingWorker(Db db, FileProcessingQueue queue, ServerOptions options, ILogger<FileProcessingWorker> log) : BackgroundService
{
    public override Task StartAsync(CancellationToken ct)
    {
        using (var conn = db.Connect())
            foreach (var id in Db.Query(conn, null, "SELECT id FROM files WHERE status = @s ORDER BY rowid", r => r.GetString(0), ("@s", FileStatus.Processing)))
                queue.Enqueue(id);
        return base.StartAsync(ct);
    }

    protected override async Task ExecuteAsync(CancellationToken ct)
    {
        var turns = new FairTurns();
        try
        {
            while (!ct.IsCancellationRequested)
            {
                // Everything that arrived is sorted by organisation; wait only when nothing is pending.
                if (turns.IsEmpty && !await queue.Reader.WaitToReadAsync(ct)) break;
                while (queue.Reader.TryRead(out var arrived))
                    if (OrgOf(arrived) is { } org) turns.Add(org, arrived);
                if (turns.Next() is { } id) await Task.Run(() => ProcessOne(id), ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }

    string? OrgOf(string fileId)
    {
        using var conn = db.Connect();
        return Db.Scalar<string>(conn, null, "SELECT org FROM files WHERE id = @id", ("@id", fileId));
    }

    /// <summary>
    /// Round robin over organisations, first come first served within one: a tiny file waits for at
    /// most one file of each other organisation, not for everything they uploaded before it.
    /// </summary>
    internal sealed class FairTurns
    {
        readonly Dictionary<string, Queue<string>> _pending = new(StringComparer.Ordinal);
        readonly Queue<string> _orgs = new();

        public bool IsEmpty => _orgs.Count == 0;

        public void Add(string org, string fileId)
        {
            if (!_pending.TryGetValue(org, out var files))
            {
                _pending[org] = files = new Queue<string>();
                _orgs.Enqueue(org);
            }
            files.Enqueue(fileId);
        }

        public string? Next()
        {
            if (!_orgs.TryDequeue(out var org)) return null;
            var files = _pending[org];
            var id = files.Dequeue();
            if (files.Count > 0) _orgs.Enqueue(org);
            else _pending.Remove(org);
            return id;
        }
    }

    void ProcessOne(string id)
    {
        string? sha;
        long? examples;
        using (var conn = db.Connect())
        {
            var row = Db.Query(conn, null, "SELECT sha256, num_examples FROM files WHERE id = @id AND status = @s",
                r => (Sha: r.GetString(0), Examples: Db.Long(r, "num_examples")), ("@id", id), ("@s", FileStatus.Processing)).FirstOrDefault();
            if (row.Sha is null) return; // deleted or already done
            (sha, examples) = row;
        }

        DatasetReport report;
        bool? hasImages = null;
        try
        {
            var path = FileRows.EnsureLocal(db, sha);
            if (examples is { } n)
            {
                // Validated while it was uploaded; only images keep such a file `processing`.
                report = new DatasetReport((int)n, [], 0);
                hasImages = true;
            }
            else
            {
                report = DatasetValidator.ValidateFile(path, new DatasetValidationOptions(FileUpload.MaxErrorsShown, Vision: true));
                if (report.IsValid) hasImages = report.ExamplesWithImages > 0;
            }
            // https images are fetched now, once, and stored beside the file (ImageFetching).
            if (report.IsValid && hasImages == true
                && ImageFetching.FetchAndStoreAsync(path, options.ImageFetch, FileUpload.MaxErrorsShown, CancellationToken.None).GetAwaiter().GetResult() is { Total: > 0 } fetch)
                report = new DatasetReport(report.NumExamples, fetch.Errors, fetch.Total);
            // A server that lacks them fetches the images from the object store: they go there before `ready`.
            if (report.IsValid && Directory.Exists(Anneal.Core.Vision.StoredImages.FolderFor(path)))
                ObjectFiles.PublishFolderAsync(db, Anneal.Core.Vision.StoredImages.FolderFor(path), CancellationToken.None).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug must not leave the file `processing` forever: fail it and say why.
            log.LogError(e, "Processing file {FileId} threw", id);
            report = new DatasetReport(0, [new ErrorItem(null, null, $"internal error while processing: {e.GetType().Name}: {e.Message}")], 1);
        }

        var status = report.IsValid ? FileStatus.Ready : FileStatus.Failed;
        // A failed file reports num_examples: null rather than a count that includes broken lines.
        int? numExamples = report.IsValid ? report.NumExamples : null;
        using (var conn = db.Connect())
            Db.Exec(conn, null, """
                UPDATE files SET status = @status, num_examples = @n, errors = @errors, total_errors = @total, has_images = @images
                WHERE id = @id AND status = @processing
                """,
                ("@status", status), ("@n", numExamples), ("@errors", Db.ToJson(report.Errors.ToList())),
                ("@total", report.TotalErrors), ("@images", hasImages), ("@id", id), ("@processing", FileStatus.Processing));
        log.LogInformation("File {FileId} processed: {Status} ({Examples} examples, {Errors} errors)", id, status, report.NumExamples, report.TotalErrors);
    }
}
