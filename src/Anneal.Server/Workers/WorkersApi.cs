// /api/workers: trainers on other hosts (`anneal worker`). Authenticated by the server's worker
// token (`anneal serve --worker-token`, ANNEAL_WORKER_TOKEN), not by an organisation's API key,
// since a worker runs every organisation's jobs. Absent token: the endpoints answer 404.
//   GET  (/api/workers itself)          → the registered workers (worker token or an admin API key)
//   POST register                       → a worker's slots: name, GPU type, GPUs per slot, slots (WorkerRegistry)
//   POST claim                          → 200 WorkerClaim | 204 nothing queued (marks the worker seen)
//   POST jobs/{id}/heartbeat            → renews the lease (409 lease_lost: stop the trainer)
//   POST jobs/{id}/lines                → trainer stdout lines, recorded as a local trainer's
//   POST jobs/{id}/exit                 → the exit code, last lines and stderr tail: final status
//   GET  files/{id}                     → a dataset's bytes (X-Content-SHA256)
//   GET  files/{id}/images              → the https images stored with it: {url: sha256} ({} if none)
//   GET  files/{id}/images/{sha256}     → one stored image's bytes (X-Content-SHA256)
//   PUT  jobs/{id}/artifacts/{path}     → a tar of checkpoints/step-N or final (sha256-checked), whole
//                                         or in Content-Range chunks (ArtifactUploads)
//   HEAD jobs/{id}/artifacts/{path}     → Upload-Offset: the bytes of a chunked upload the server has
//   GET  jobs/{id}/artifacts/{path}     → a tar of a checkpoint to resume from (X-Content-SHA256)
//   GET  jobs/{id}/model[/{path}]       → the job's base model as the server has it (WorkerModels)
// Downloads honour Range/If-Range with the sha256 as ETag (Ranged), so a broken one resumes.
// Every call that writes carries the lease and is refused (409) when it no longer holds the job.
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Core.Vision;
using Anneal.Server.Events;
using Anneal.Server.Files;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Logging.Abstractions;

namespace Anneal.Server.Workers;

public static partial class WorkersApi
{
    public static IEndpointRouteBuilder MapWorkersApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/api/workers", ListWorkers).AddEndpointFilter(RequireAdminKeyOrToken);
        var g = app.MapGroup("/api/workers").AddEndpointFilter(RequireToken);
        g.MapPost("/register", Register);
        g.MapPost("/claim", Claim);
        g.MapPost("/jobs/{id}/heartbeat", Heartbeat);
        g.MapPost("/jobs/{id}/lines", Lines);
        g.MapPost("/jobs/{id}/exit", Exit);
        g.MapGet("/files/{id}", FileBytes).AddEndpointFilter(FileBlobs.EnsureCached);
        g.MapGet("/files/{id}/images", FileImageIndex).AddEndpointFilter(FileBlobs.EnsureCached);
        g.MapGet("/files/{id}/images/{hash}", FileImage).AddEndpointFilter(FileBlobs.EnsureCached);
        g.MapPut("/jobs/{id}/artifacts/{*path}", Upload);
        g.MapMethods("/jobs/{id}/artifacts/{*path}", [HttpMethods.Head], UploadOffset);
        g.MapGet("/jobs/{id}/artifacts/{*path}", Download);
        g.MapGet("/jobs/{id}/model", WorkerModels.Manifest);
        g.MapGet("/jobs/{id}/model/{*path}", WorkerModels.FileBytes);
        return app;
    }

    static async ValueTask<object?> RequireToken(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        var http = ctx.HttpContext;
        if (http.RequestServices.GetRequiredService<ServerOptions>().WorkerToken is null) return Problems.NotFound("endpoint", http.Request.Path);
        if (!TokenGiven(http)) return Problems.Unauthorized("Invalid worker token.");
        return await next(ctx);
    }

    static bool TokenGiven(HttpContext http)
    {
        var token = http.RequestServices.GetRequiredService<ServerOptions>().WorkerToken;
        if (token is null) return false;
        var header = http.Request.Headers.Authorization.ToString();
        var given = header.StartsWith("Bearer ", StringComparison.Ordinal) ? header[7..].Trim() : "";
        return CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(given), System.Text.Encoding.UTF8.GetBytes(token));
    }

    /// <summary>GET /api/workers: the worker token, or an organisation's admin key (workers run every organisation's jobs; the list names hosts, never jobs).</summary>
    static async ValueTask<object?> RequireAdminKeyOrToken(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next)
    {
        if (TokenGiven(ctx.HttpContext)) return await next(ctx);
        return await Auth.ApiKeys.Require(ctx, async c => Auth.ApiKeys.Key(c.HttpContext).Admin
            ? await next(c)
            : Problems.Make(403, "forbidden", "Not an admin key", "Only an admin key (or the worker token) lists the workers; create one on the server's machine with `anneal keys create --org NAME`."));
    }

    static Ok<WorkerList> ListWorkers(Db db, ServerOptions options)
    {
        using var conn = db.Connect();
        return TypedResults.Ok(new WorkerList(WorkerRegistry.List(conn, options.WorkerWindow)));
    }

    /// <summary>POST register {worker, gpu_type?, gpus_per_slot, slots}: a worker's slots, on start (400 naming a bad field).</summary>
    static async Task<Results<Ok<WorkerInfo>, ProblemHttpResult>> Register(HttpContext http, Db db, ServerOptions options)
    {
        System.Text.Json.Nodes.JsonNode? body;
        try { body = await System.Text.Json.Nodes.JsonNode.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted); }
        catch (JsonException e) { return Problems.BadRequest($"The request body is not valid JSON ({e.Message})."); }
        var (registration, problem) = WorkerRegistry.Parse(body);
        if (registration is null) return problem!;
        WorkerRegistry.Register(db, registration);
        using var conn = db.Connect();
        return TypedResults.Ok(WorkerRegistry.List(conn, options.WorkerWindow).Single(w => w.Name == registration.Worker));
    }

    static ProblemHttpResult Lost(string id, Operations.OperationsCounters counters)
    {
        counters.AddLeaseRefusal();
        return Problems.Make(409, WorkerProtocol.LeaseLost, "Lease lost", $"Job '{id}' is no longer this worker's (its lease lapsed and the job was recovered, or it was cancelled); stop its trainer and discard its results.");
    }

    static Results<Ok<WorkerClaim>, NoContent, ProblemHttpResult> Claim(WorkerClaimRequest? request, Db db, ServerOptions options, JobSignals signals)
    {
        if (request is null || string.IsNullOrWhiteSpace(request.Worker))
            return Problems.BadRequest("The request body must be a JSON object like {\"worker\": \"gpu-host-1\", \"gpus\": [\"0\"]}.");
        var owner = $"worker:{request.Worker.Trim()}:{Guid.NewGuid().ToString("n")[..8]}";
        using var conn = db.Connect();
        WorkerRegistry.Seen(conn, null, request.Worker.Trim(), request.GpuType, request.Gpus?.Count ?? 0);
        JobRow job;
        JobLease lease;
        using (var tx = Db.BeginRowLocked(conn))
        {
            var gpus = request.Gpus?.Count ?? 0;
            var (claimed, passedOver) = JobLeases.ClaimFitting(conn, tx, owner, options.LeaseDuration,
                metadata => Placement.Check(ComputeRequest.Of(metadata), request.GpuType, gpus, request.CpuRanks).Fits);
            foreach (var (passedId, metadata) in passedOver)
                SayWaiting(conn, tx, passedId, Placement.Check(ComputeRequest.Of(metadata), request.GpuType, gpus, request.CpuRanks).Why!, request.Worker.Trim());
            if (claimed is not { } claim)
            {
                tx.Commit();
                if (passedOver.Count > 0) signals.EventsAppended.Signal();
                return TypedResults.NoContent();
            }
            lease = claim.Lease;
            JobEvents.Append(conn, tx, claim.JobId, EventTypes.Running, "info", $"Trainer process starting on worker {request.Worker.Trim()}.",
                new System.Text.Json.Nodes.JsonObject { ["attempt"] = lease.Attempt, ["worker"] = request.Worker.Trim() });
            job = JobRows.FindAny(conn, tx, claim.JobId)!;
            tx.Commit();
        }
        signals.EventsAppended.Signal();
        var run = new TrainerRun(db, options, signals, NullLogger.Instance, job, null, lease);
        var (settings, errors) = job.EffectiveSettings();
        var train = job.Wire.TrainingFileId is { } t ? FileRows.Find(conn, null, job.Org, t) : null;
        var validation = job.Wire.ValidationFileId is { } v ? FileRows.Find(conn, null, job.Org, v) : null;
        string? problem = settings is null ? "hyperparameters are no longer valid: " + string.Join("; ", errors)
            : train is null ? $"training file '{job.Wire.TrainingFileId}' was deleted before the job ran"
            : job.Wire.ValidationFileId is not null && validation is null ? $"validation file '{job.Wire.ValidationFileId}' was deleted before the job ran"
            : null;
        var code = ErrorCodes.UserDataError;
        if (problem is null && JobArtifacts.FetchNewestCheckpoint(db, job.Wire.Id) is { } storeProblem) (problem, code) = (storeProblem, ErrorCodes.ObjectStore);
        if (problem is not null)
        {
            var failed = JsonSerializer.Serialize(new TrainerEvent(EventTypes.Failed, "error", problem,
                new System.Text.Json.Nodes.JsonObject { ["error"] = new System.Text.Json.Nodes.JsonObject { ["code"] = code, ["message"] = problem } }), AnnealJson.Options);
            run.RecordRemoteLine(failed);
            run.RecordRemoteExit(2, []);
            return TypedResults.NoContent();
        }
        var output = Path.Combine(db.JobsDir, job.Wire.Id, "output");
        JobOutput.RemovePartials(output);
        ArtifactUploads.SweepAbandoned(db);   // earlier attempts' unfinished uploads (their leases are gone)
        var resume = JobOutput.NewestCompleteCheckpoint(output) is { } c ? Path.GetRelativePath(output, c.Path) : null;
        static WorkerFile Describe(FileObject f) => new(f.Id, f.Filename, f.Sha256, f.Bytes);
        // [compute].gpu_count GPUs of those offered (placement checked they are there), or as many CPU ranks.
        var requested = RankPlacement.RequestedGpus(job);
        var ranks = (request.Gpus?.Count ?? 0) > 0 ? Math.Min(requested, request.Gpus!.Count) : request.CpuRanks ? requested : 1;
        return TypedResults.Ok(new WorkerClaim(job.Wire.Id, lease.Owner, lease.Attempt, options.LeaseDuration.TotalSeconds,
            job.Wire.Model, settings!.Training, settings.Training.Mode != TrainingModes.FullFinetune,
            Describe(train!), validation is null ? null : Describe(validation), resume, ranks));
    }

    /// <summary>One sft.placement.waiting event per job and reason (not one per poll).</summary>
    static void SayWaiting(System.Data.Common.DbConnection conn, System.Data.Common.DbTransaction tx, string jobId, string why, string worker)
    {
        var message = $"Waiting for a worker that fits: {why}.";
        var last = Db.Scalar<string>(conn, tx, "SELECT message FROM job_events WHERE job_id = @job AND type = @type ORDER BY seq DESC LIMIT 1",
            ("@job", jobId), ("@type", Placement.WaitingEvent));
        if (last == message) return;
        JobEvents.Append(conn, tx, jobId, Placement.WaitingEvent, "info", message,
            new System.Text.Json.Nodes.JsonObject { ["reason"] = why, ["worker"] = worker });
    }

    static Results<Ok, ProblemHttpResult> Heartbeat(string id, WorkerLease? lease, Db db, ServerOptions options, Operations.OperationsCounters counters)
    {
        if (lease is null) return Problems.BadRequest("The request body must be {\"owner\": …, \"attempt\": …} as the claim returned.");
        using var conn = db.Connect();
        if (!JobLeases.Renew(conn, id, new JobLease(lease.Owner, lease.Attempt), options.LeaseDuration)) return Lost(id, counters);
        WorkerRegistry.SeenByLease(conn, lease.Owner);
        return TypedResults.Ok();
    }

    static Results<Ok, ProblemHttpResult> Lines(string id, WorkerLines? body, Db db, ServerOptions options, JobSignals signals, Operations.OperationsCounters counters)
    {
        if (body?.Lines is null) return Problems.BadRequest("The request body must be {\"owner\", \"attempt\", \"lines\": [...]}.");
        if (RunOf(id, body.Owner, body.Attempt, db, options, signals) is not { } run) return Lost(id, counters);
        var output = Path.Combine(db.JobsDir, id, "output");
        foreach (var line in body.Lines) run.RecordRemoteLine(Localise(line, output));
        return RunOf(id, body.Owner, body.Attempt, db, options, signals) is null ? Lost(id, counters) : TypedResults.Ok();
    }

    static Results<Ok<JobObject>, ProblemHttpResult> Exit(string id, WorkerExit? body, Db db, ServerOptions options, JobSignals signals, Operations.OperationsCounters counters)
    {
        if (body?.Lines is null) return Problems.BadRequest("The request body must be {\"owner\", \"attempt\", \"exit_code\", \"lines\": [...]}.");
        if (RunOf(id, body.Owner, body.Attempt, db, options, signals) is not { } run) return Lost(id, counters);
        var output = Path.Combine(db.JobsDir, id, "output");
        foreach (var line in body.Lines) run.RecordRemoteLine(Localise(line, output));
        run.RecordRemoteExit(body.ExitCode, body.LogTail ?? []);
        ArtifactUploads.SweepAbandoned(db);   // the attempt is over: its unfinished uploads can never complete
        using var conn = db.Connect();
        return TypedResults.Ok(JobRows.FindAny(conn, null, id)!.Wire);
    }

    static Results<FileStreamHttpResult, ProblemHttpResult> FileBytes(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        var sha = Db.Scalar<string>(conn, null, "SELECT sha256 FROM files WHERE id = @id AND status = @s", ("@id", id), ("@s", FileStatus.Ready));
        if (sha is null) return Problems.NotFound("file", id);
        return Ranged(http, new FileStream(FileRows.BlobPath(db, sha), FileMode.Open, FileAccess.Read, FileShare.Read), sha, "application/octet-stream");
    }

    /// <summary>The images the server fetched for a ready dataset (url → sha256), so a worker trains on the same bytes.</summary>
    static Results<Ok<Dictionary<string, string>>, ProblemHttpResult> FileImageIndex(string id, Db db)
    {
        if (ReadyBlob(id, db) is not { } blob) return Problems.NotFound("file", id);
        var index = Path.Combine(StoredImages.FolderFor(blob), StoredImages.IndexFile);
        return TypedResults.Ok(File.Exists(index)
            ? JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(index)) ?? []
            : new Dictionary<string, string>());
    }

    /// <summary>One of a ready dataset's stored images, named by its sha256 (only those its index lists).</summary>
    static Results<FileStreamHttpResult, ProblemHttpResult> FileImage(string id, string hash, HttpContext http, Db db)
    {
        if (ReadyBlob(id, db) is not { } blob) return Problems.NotFound("file", id);
        if (hash.Length != 64 || !hash.All(char.IsAsciiHexDigitLower))
            return Problems.BadRequest($"image '{hash}': expected the 64 lowercase hex digits of its sha256");
        var folder = StoredImages.FolderFor(blob);
        var index = Path.Combine(folder, StoredImages.IndexFile);
        if (!File.Exists(index) || !(JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(index)) ?? []).ContainsValue(hash))
            return Problems.NotFound("image", hash);
        return Ranged(http, new FileStream(Path.Combine(folder, hash), FileMode.Open, FileAccess.Read, FileShare.Read), hash, "application/octet-stream");
    }

    /// <summary>
    /// Bytes a worker downloads, resumable: HTTP Range (206 with Content-Range; 416 with `bytes */LENGTH`
    /// past the end), the sha256 as ETag so `If-Range` restarts a changed file from 0, and in
    /// <see cref="WorkerProtocol.Sha256Header"/> for the check once the whole file is there.
    /// </summary>
    static FileStreamHttpResult Ranged(HttpContext http, Stream bytes, string sha256, string contentType)
    {
        http.Response.Headers[WorkerProtocol.Sha256Header] = sha256;
        return TypedResults.File(bytes, contentType, enableRangeProcessing: true, entityTag: new Microsoft.Net.Http.Headers.EntityTagHeaderValue($"\"{sha256}\""));
    }

    static string? ReadyBlob(string id, Db db)
    {
        using var conn = db.Connect();
        var sha = Db.Scalar<string>(conn, null, "SELECT sha256 FROM files WHERE id = @id AND status = @s", ("@id", id), ("@s", FileStatus.Ready));
        return sha is null ? null : FileRows.BlobPath(db, sha);
    }

    /// <summary>
    /// Receives a tar of checkpoints/step-N or final into the job's output folder after its sha256
    /// matches: the whole body at once, or chunk by chunk with Content-Range (ArtifactUploads: a
    /// partial file per attempt that a broken connection resumes). Every chunk is refused (409)
    /// once the lease is gone. The complete tar is extracted into a folder of this upload's own
    /// (`….a{attempt}-{id}.partial`), then, in one transaction that locks the job's row and checks
    /// the lease again, swapped into place. A recovery or a newer attempt's claim needs that row, so
    /// a fenced upload never replaces what a newer attempt wrote, and one that lost its lease
    /// meanwhile leaves nothing behind.
    /// </summary>
    static async Task<Results<Ok, NoContent, ProblemHttpResult>> Upload(string id, string path, string? owner, long? attempt, HttpContext http, Db db, Operations.OperationsCounters counters)
    {
        if (!ArtifactPath().IsMatch(path)) return Problems.BadRequest($"artifact path '{path}': expected checkpoints/step-N or final");
        if (ExpectedSha(http) is not { } expected) return BadShaHeader();
        ChunkRange? range = null;
        if (http.Request.Headers.ContentRange.ToString() is { Length: > 0 } header)
        {
            var (parsed, error) = ChunkRange.Parse(header);
            if (parsed is null) return Problems.BadRequest(error!, [new ErrorItem(null, "Content-Range", $"expected {ChunkRange.Expected}")]);
            range = parsed;
            if (http.Request.ContentLength is { } length && length != parsed.Value.Length)
                return Problems.BadRequest($"header Content-Length {length} does not match Content-Range '{parsed}' ({parsed.Value.Length} bytes)",
                    [new ErrorItem(null, "Content-Length", $"expected {parsed.Value.Length}")]);
        }
        // An artifact is not a dataset: --max-upload-mb (the server-wide body limit) does not bound it.
        // A chunk is bounded by its Content-Range (with room for AppendAsync to name a longer body).
        if (http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = range is { } r ? r.Length + 1024 * 1024 : null;
        var lease = new JobLease(owner ?? "", attempt ?? -1);
        using (var conn = db.Connect())
            if (!JobLeases.Holds(conn, null, id, lease))
            {
                ArtifactUploads.SweepAbandoned(db);
                return Lost(id, counters);
            }
        if (range is { } chunk) return await UploadChunk(id, path, expected, chunk, lease, http, db, counters);

        var tmp = Path.Combine(db.TmpDir, $"artifact-{Guid.NewGuid():n}.tar");
        try
        {
            await using (var file = new FileStream(tmp, DataDirPermissions.NewFile(FileMode.CreateNew, FileAccess.Write, FileOptions.None)))
            using (var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var buffer = new byte[81920];
                int n;
                while ((n = await http.Request.Body.ReadAsync(buffer, http.RequestAborted)) > 0)
                {
                    sha.AppendData(buffer, 0, n);
                    counters.AddArtifactBytes(n);
                    await file.WriteAsync(buffer.AsMemory(0, n), http.RequestAborted);
                }
                var actual = Convert.ToHexStringLower(sha.GetHashAndReset());
                if (actual != expected) return Problems.BadRequest($"artifact {path}: the body's sha256 is {actual}, the header said {expected}; send it again");
            }
            return await SwapIn(id, path, tmp, lease, http, db, counters);
        }
        finally { File.Delete(tmp); }
    }

    /// <summary>One Content-Range chunk of a resumable upload (ArtifactUploads); the last one swaps the artifact in.</summary>
    static async Task<Results<Ok, NoContent, ProblemHttpResult>> UploadChunk(string id, string path, string expected, ChunkRange range, JobLease lease,
        HttpContext http, Db db, Operations.OperationsCounters counters)
    {
        var partial = ArtifactUploads.PartialPath(db, id, lease.Attempt, path, expected);
        var file = ArtifactUploads.OpenExclusive(partial);
        if (file is null) return Busy(path, http);
        var complete = false;
        try
        {
            var have = file.Length;
            if (range.Start != have)
            {
                http.Response.Headers[ArtifactUploads.OffsetHeader] = have.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return Problems.Make(409, ArtifactUploads.OffsetMismatch, "Upload offset mismatch",
                    $"artifact {path}: the chunk '{range}' starts at byte {range.Start}, the server has {have} bytes of this upload; send from byte {have}",
                    extra: new Dictionary<string, object?> { ["offset"] = have });
            }
            var appended = await ArtifactUploads.AppendAsync(file, range, http.Request.Body, counters.AddArtifactBytes, http.RequestAborted);
            var now = file.Length;
            http.Response.Headers[ArtifactUploads.OffsetHeader] = now.ToString(System.Globalization.CultureInfo.InvariantCulture);
            switch (appended)
            {
                case ArtifactUploads.Appended.Interrupted:
                    return TypedResults.NoContent();   // the client is gone; what arrived is kept for its retry
                case ArtifactUploads.Appended.TooLong:
                    return Problems.BadRequest($"artifact {path}: the body is longer than Content-Range '{range}' says ({range.Length} bytes); nothing of it was kept, send from byte {now}",
                        [new ErrorItem(null, "Content-Range", $"the body is longer than {range.Length} bytes")]);
                case ArtifactUploads.Appended.Incomplete:
                    return Problems.BadRequest($"artifact {path}: the body ended after {now - have} of the {range.Length} bytes Content-Range '{range}' says; they were kept, send from byte {now}",
                        [new ErrorItem(null, "Content-Range", $"the body is shorter than {range.Length} bytes")]);
            }
            if (now < range.Total) return TypedResults.NoContent();
            var actual = await ArtifactUploads.Sha256Async(file, http.RequestAborted);
            complete = true;   // removed below whatever comes next: complete, or wrong and started again from 0
            if (actual != expected)
                return Problems.BadRequest($"artifact {path}: the {range.Total} bytes received have sha256 {actual}, the header said {expected}; send it again from byte 0");
            await file.DisposeAsync();
            return await SwapIn(id, path, partial, lease, http, db, counters);
        }
        finally
        {
            await file.DisposeAsync();
            if (complete) File.Delete(partial);
        }
    }

    /// <summary>HEAD of an upload (same query and X-Content-SHA256 as its chunks): Upload-Offset, the bytes the server has.</summary>
    static Results<Ok, ProblemHttpResult> UploadOffset(string id, string path, string? owner, long? attempt, HttpContext http, Db db, Operations.OperationsCounters counters)
    {
        if (!ArtifactPath().IsMatch(path)) return Problems.BadRequest($"artifact path '{path}': expected checkpoints/step-N or final");
        if (ExpectedSha(http) is not { } expected) return BadShaHeader();
        var lease = new JobLease(owner ?? "", attempt ?? -1);
        using (var conn = db.Connect())
            if (!JobLeases.Holds(conn, null, id, lease)) return Lost(id, counters);
        if (ArtifactUploads.Offset(ArtifactUploads.PartialPath(db, id, lease.Attempt, path, expected)) is not { } offset) return Busy(path, http);
        http.Response.Headers[ArtifactUploads.OffsetHeader] = offset.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Ok();
    }

    static string? ExpectedSha(HttpContext http)
    {
        var sha = http.Request.Headers[WorkerProtocol.Sha256Header].ToString().Trim().ToLowerInvariant();
        return sha.Length == 64 && sha.All(char.IsAsciiHexDigitLower) ? sha : null;
    }

    static ProblemHttpResult BadShaHeader() =>
        Problems.BadRequest($"header {WorkerProtocol.Sha256Header}: expected the hex sha256 of the whole tar (64 hex digits)",
            [new ErrorItem(null, WorkerProtocol.Sha256Header, "expected 64 hex digits")]);

    static ProblemHttpResult Busy(string path, HttpContext http)
    {
        http.Response.Headers.RetryAfter = "1";
        return Problems.Make(503, "upload_busy", "Upload busy", $"artifact {path}: another request is still writing this upload (a broken connection being read to its end); retry in a moment");
    }

    /// <summary>Extracts a checked tar aside and swaps it in as output/<paramref name="path"/> under the job's row lock, if the lease still holds.</summary>
    static async Task<Results<Ok, NoContent, ProblemHttpResult>> SwapIn(string id, string path, string tar, JobLease lease, HttpContext http, Db db, Operations.OperationsCounters counters)
    {
        var target = Path.Combine(db.JobsDir, id, "output", path);
        var aside = $"{target}.a{lease.Attempt}-{Guid.NewGuid().ToString("n")[..8]}.partial";
        try
        {
            Directory.CreateDirectory(aside);
            try { await TarFile.ExtractToDirectoryAsync(tar, aside, overwriteFiles: false, http.RequestAborted); }
            catch (DirectoryNotFoundException)
            {
                // A newer attempt's claim (or a recovery) swept the job's partial folders meanwhile.
                return Lost(id, counters);
            }
            using (var conn = db.Connect())
            using (var tx = Db.BeginRowLocked(conn))
            {
                if (!JobLeases.Holds(conn, tx, id, lease) || !Directory.Exists(aside)) return Lost(id, counters);
                if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
                Directory.Move(aside, target);
                tx.Commit();
            }
            return TypedResults.Ok();
        }
        finally
        {
            try { if (Directory.Exists(aside)) Directory.Delete(aside, recursive: true); }
            catch (IOException) { }
        }
    }

    /// <summary>
    /// A checkpoint as a tar (built aside first), with its sha256 in <see cref="WorkerProtocol.Sha256Header"/>
    /// for the worker to check, and ranges (<see cref="Ranged"/>): the tar of an unchanged folder
    /// is the same bytes each time, so a broken download resumes.
    /// </summary>
    static async Task<Results<FileStreamHttpResult, ProblemHttpResult>> Download(string id, string path, HttpContext http, Db db)
    {
        if (!ArtifactPath().IsMatch(path)) return Problems.BadRequest($"artifact path '{path}': expected checkpoints/step-N or final");
        var dir = Path.Combine(db.JobsDir, id, "output", path);
        if (!Directory.Exists(dir)) return Problems.NotFound("artifact", $"{id}/{path}");
        var tmp = Path.Combine(db.TmpDir, $"artifact-{Guid.NewGuid():n}.tar");
        var file = new FileStream(tmp, DataDirPermissions.NewFile(FileMode.CreateNew, FileAccess.ReadWrite, FileOptions.DeleteOnClose));
        // Unlinked at once where the open stream keeps its bytes (Unix): nothing is left in tmp/ however the
        // response ends, and none while the client reads its last bytes (the stream closes only after).
        if (!OperatingSystem.IsWindows()) File.Delete(tmp);
        try
        {
            await TarFile.CreateFromDirectoryAsync(dir, file, includeBaseDirectory: false, http.RequestAborted);
            file.Position = 0;
            var sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(file, http.RequestAborted));
            file.Position = 0;
            return Ranged(http, file, sha, "application/x-tar");
        }
        catch
        {
            await file.DisposeAsync();
            throw;
        }
    }

    /// <summary>This worker's run of the job if its lease still holds it, else null.</summary>
    static TrainerRun? RunOf(string id, string owner, long attempt, Db db, ServerOptions options, JobSignals signals)
    {
        var lease = new JobLease(owner, attempt);
        using var conn = db.Connect();
        if (!JobLeases.Holds(conn, null, id, lease)) return null;
        var job = JobRows.FindAny(conn, null, id);
        return job is null ? null : new TrainerRun(db, options, signals, NullLogger.Instance, job, null, lease);
    }

    static string Localise(string line, string output) =>
        line.Replace(WorkerProtocol.OutputPlaceholder, JsonEncodedText.Encode(output).ToString(), StringComparison.Ordinal);

    [GeneratedRegex(@"^(checkpoints/step-[0-9]+|final)$")]
    private static partial Regex ArtifactPath();
}
