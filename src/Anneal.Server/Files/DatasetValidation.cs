// Background dataset validation: uploads are acknowledged at once (status `processing`) and a
// single worker validates them in order with Core's DatasetValidator, then marks each file
// `ready` or `failed` with its first 20 line-numbered errors and the total count.
// Files still `processing` when the server stopped are queued again on start.
using System.Threading.Channels;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Server.Storage;

namespace Anneal.Server.Files;

public sealed class DatasetValidationQueue
{
    readonly Channel<string> _ids = Channel.CreateUnbounded<string>();
    public void Enqueue(string fileId) => _ids.Writer.TryWrite(fileId);
    public ChannelReader<string> Reader => _ids.Reader;
}

public sealed class DatasetValidationWorker(Db db, DatasetValidationQueue queue, ServerOptions options, ILogger<DatasetValidationWorker> log) : BackgroundService
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
        await foreach (var id in queue.Reader.ReadAllAsync(ct))
        {
            try { await Task.Run(() => ValidateOne(id), ct); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
        }
    }

    void ValidateOne(string id)
    {
        string? sha;
        using (var conn = db.Connect())
            sha = Db.Scalar<string>(conn, null, "SELECT sha256 FROM files WHERE id = @id AND status = @s", ("@id", id), ("@s", FileStatus.Processing));
        if (sha is null) return; // deleted or already validated

        DatasetReport report;
        bool? hasImages = null;
        try
        {
            // Uploads are not tied to a model yet: accept image parts here, and remember whether
            // there are any (a text-only pass then fails) so job creation can refuse text-only models.
            var path = FileRows.BlobPath(db, sha);
            report = DatasetValidator.ValidateFile(path, new DatasetValidationOptions(Vision: true));
            if (report.IsValid) hasImages = !DatasetValidator.ValidateFile(path, new DatasetValidationOptions(MaxErrorsShown: 0, Vision: false)).IsValid;
            // https images are fetched now, once, and stored beside the file (ImageFetching).
            if (report.IsValid && hasImages == true
                && ImageFetching.FetchAndStoreAsync(path, options.ImageFetch, 20, CancellationToken.None).GetAwaiter().GetResult() is { Total: > 0 } fetch)
                report = new DatasetReport(report.NumExamples, fetch.Errors, fetch.Total);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A validator bug must not leave the file `processing` forever: fail it and say why.
            log.LogError(e, "Validating file {FileId} threw", id);
            report = new DatasetReport(0, [new ErrorItem(null, null, $"internal error while validating: {e.GetType().Name}: {e.Message}")], 1);
        }

        var errors = report.Errors.ToList();
        if (report.TotalErrors == 0 && report.NumExamples == 0)
            errors = [new ErrorItem(null, null, "the file holds no examples (only blank lines)")];
        var status = report.IsValid ? FileStatus.Ready : FileStatus.Failed;
        // DatasetReport.NumExamples counts every non-blank line read, valid or not (a line that is not
        // JSON counts too), and the report cannot say how many records were valid (one line may hold
        // several errors). So a failed file reports num_examples: null rather than a count that
        // includes broken lines; a ready file reports the true number of examples.
        int? numExamples = report.IsValid ? report.NumExamples : null;
        using (var conn = db.Connect())
            Db.Exec(conn, null, """
                UPDATE files SET status = @status, num_examples = @n, errors = @errors, total_errors = @total, has_images = @images
                WHERE id = @id AND status = @processing
                """,
                ("@status", status), ("@n", numExamples), ("@errors", Db.ToJson(errors)),
                ("@total", Math.Max(report.TotalErrors, errors.Count)), ("@images", hasImages), ("@id", id), ("@processing", FileStatus.Processing));
        log.LogInformation("File {FileId} validated: {Status} ({Examples} examples, {Errors} errors)", id, status, report.NumExamples, report.TotalErrors);
    }
}
