// How `anneal worker` moves large files to and from the server so that a broken connection costs
// the bytes in flight, not the whole file (server side: WorkersApi.Ranged and ArtifactUploads).
//   Download: into a `.partial` file; after an IOException or HttpRequestException mid-body, or a
//     5xx answer, it asks again for `Range: bytes=<have>-` with `If-Range: <ETag>` (the sha256), so
//     a file that changed meanwhile comes whole from byte 0 (200) instead of being spliced. A
//     dataset's partial keeps across worker restarts (its sha256, hence its ETag, is known from the
//     claim). The caller checks the sha256 of the whole file, as before.
//   Upload: Content-Range chunks of ChunkBytes (16 MiB) with the whole tar's sha256; after a break
//     it asks the server where to resume (HEAD → Upload-Offset) and goes on from there. The server
//     refuses a chunk at the wrong offset with the right one (409 upload_offset_mismatch), and any
//     chunk of a fenced attempt with 409 lease_lost, which ends the attempt as every 409 does.
// Retries: Retries consecutive failures without progress, waiting Backoff, 2×, 4×, … (at most 30 s);
// then TransferFailedException, on which the worker abandons the claim (the server re-queues the job
// when the lease lapses) rather than failing a job for its network.
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Anneal.Server.Workers;

namespace Anneal.Cli.Worker;

public sealed record TransferSettings
{
    /// <summary>Bytes per upload request: a break resends at most this much.</summary>
    public int ChunkBytes { get; init; } = 16 * 1024 * 1024;
    /// <summary>Consecutive failures (without a byte of progress) before the transfer gives up.</summary>
    public int Retries { get; init; } = 5;
    public TimeSpan Backoff { get; init; } = TimeSpan.FromSeconds(1);
}

public sealed class WorkerTransfers(HttpClient http, TextWriter log, TransferSettings settings)
{
    static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Downloads <paramref name="url"/> into <paramref name="partial"/>, continuing what it already
    /// holds when <paramref name="knownSha256"/> says which bytes those are. Returns the sha256 the
    /// server named (X-Content-SHA256), else <paramref name="knownSha256"/>; the caller checks it.
    /// </summary>
    public async Task<string?> DownloadAsync(string url, string partial, string? knownSha256, CancellationToken ct)
    {
        var etag = knownSha256 is null ? null : $"\"{knownSha256}\"";
        var named = knownSha256;
        var failures = 0;
        long progress = -1;
        while (true)
        {
            var have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            if (have > 0 && etag is null)
            {
                File.Delete(partial);   // bytes of unknown origin: nothing to check a range against
                have = 0;
            }
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, url);
                if (have > 0)
                {
                    request.Headers.Range = new RangeHeaderValue(have, null);
                    request.Headers.IfRange = new RangeConditionHeaderValue(etag!);
                }
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
                if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
                {
                    // The partial is as long as the file or longer: not a prefix of it. Start again.
                    File.Delete(partial);
                    throw new HttpRequestException($"GET {url}: 416 for bytes {have}- of the partial download; starting again from 0", null, response.StatusCode);
                }
                if ((int)response.StatusCode >= 500)
                    throw new HttpRequestException($"GET {url}: {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
                await WorkerAgent.EnsureAsync(response, $"download of {url}", ct);
                named = response.Headers.TryGetValues(WorkerProtocol.Sha256Header, out var values) ? values.FirstOrDefault()?.Trim().ToLowerInvariant() : named;
                etag = response.Headers.ETag?.ToString() ?? etag;
                var resumed = response.StatusCode == HttpStatusCode.PartialContent;
                if (resumed && response.Content.Headers.ContentRange?.From != have)
                {
                    File.Delete(partial);
                    throw new HttpRequestException($"GET {url}: asked for bytes {have}-, got '{response.Content.Headers.ContentRange}'; starting again from 0");
                }
                await using var body = await response.Content.ReadAsStreamAsync(ct);
                await using var file = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write);
                await body.CopyToAsync(file, ct);
                return named;
            }
            catch (Exception e) when (Retriable(e, ct))
            {
                var now = File.Exists(partial) ? new FileInfo(partial).Length : 0;
                if (now > progress) (failures, progress) = (0, now);
                if (++failures > settings.Retries)
                    throw new TransferFailedException($"download of {url} failed {failures} times in a row, the last at byte {now} ({e.Message})", e);
                var wait = Backoff(failures);
                log.WriteLine($"worker: download of {url} broke at byte {now} ({e.Message}); retry {failures} of {settings.Retries} in {wait.TotalSeconds:0.#} s");
                await Task.Delay(wait, ct);
            }
        }
    }

    /// <summary>Uploads <paramref name="file"/> (whose sha256 is <paramref name="sha256"/>) to <paramref name="url"/> in resumable chunks.</summary>
    public async Task UploadAsync(string url, string file, string sha256, CancellationToken ct)
    {
        await using var stream = File.OpenRead(file);
        var length = stream.Length;
        if (length == 0)
        {
            using var empty = new ByteArrayContent([]);
            empty.Headers.Add(WorkerProtocol.Sha256Header, sha256);
            using var response = await http.PutAsync(url, empty, ct);
            await WorkerAgent.EnsureAsync(response, $"upload to {url}", ct);
            return;
        }
        var buffer = new byte[(int)Math.Min(settings.ChunkBytes, length)];
        long offset = 0, progress = 0;
        var failures = 0;
        var ask = false;
        while (true)
        {
            try
            {
                if (ask)
                {
                    offset = await OffsetAsync(url, sha256, ct);
                    ask = false;
                }
                var count = (int)Math.Min(buffer.Length, length - offset);
                stream.Position = offset;
                await stream.ReadExactlyAsync(buffer.AsMemory(0, count), ct);
                using var content = new ByteArrayContent(buffer, 0, count);
                content.Headers.Add(WorkerProtocol.Sha256Header, sha256);
                content.Headers.ContentRange = new ContentRangeHeaderValue(offset, offset + count - 1, length);
                using var response = await http.PutAsync(url, content, ct);
                if (response.StatusCode == HttpStatusCode.OK) return;
                if (response.StatusCode == HttpStatusCode.NoContent)
                    offset = OffsetOf(response) ?? offset + count;
                else if (response.StatusCode == HttpStatusCode.Conflict && OffsetOf(response) is { } theirs && await CodeAsync(response, ct) == ArtifactUploads.OffsetMismatch)
                {
                    // The server has other bytes of it than this worker thought (a chunk that broke
                    // after some of it arrived): go on from there. No progress counts as a failure.
                    if (theirs <= progress && ++failures > settings.Retries)
                        throw new TransferFailedException($"upload to {url}: the server keeps answering offset {theirs}", null);
                    offset = theirs;
                }
                else if ((int)response.StatusCode >= 500)
                    throw new HttpRequestException($"PUT {url}: {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
                else
                    await WorkerAgent.EnsureAsync(response, $"upload to {url}", ct);
                if (offset > progress) (failures, progress) = (0, offset);
            }
            catch (Exception e) when (Retriable(e, ct))
            {
                if (++failures > settings.Retries)
                    throw new TransferFailedException($"upload to {url} failed {failures} times in a row near byte {offset} of {length} ({e.Message})", e);
                var wait = Backoff(failures);
                log.WriteLine($"worker: upload to {url} broke near byte {offset} of {length} ({e.Message}); retry {failures} of {settings.Retries} in {wait.TotalSeconds:0.#} s");
                await Task.Delay(wait, ct);
                ask = true;
            }
        }
    }

    /// <summary>The bytes of this upload the server has (HEAD → Upload-Offset).</summary>
    async Task<long> OffsetAsync(string url, string sha256, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Head, url);
        request.Headers.Add(WorkerProtocol.Sha256Header, sha256);
        using var response = await http.SendAsync(request, ct);
        if ((int)response.StatusCode >= 500)
            throw new HttpRequestException($"HEAD {url}: {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        await WorkerAgent.EnsureAsync(response, $"upload offset of {url}", ct);
        return OffsetOf(response) ?? throw new HttpRequestException($"HEAD {url}: the answer has no {ArtifactUploads.OffsetHeader} header", null, response.StatusCode);
    }

    static long? OffsetOf(HttpResponseMessage response) =>
        response.Headers.TryGetValues(ArtifactUploads.OffsetHeader, out var values) && long.TryParse(values.FirstOrDefault(), out var n) && n >= 0 ? n : null;

    static async Task<string?> CodeAsync(HttpResponseMessage response, CancellationToken ct)
    {
        try { return JsonNode.Parse(await response.Content.ReadAsStringAsync(ct))?["code"]?.GetValue<string>(); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException) { return null; }
    }

    /// <summary>A broken connection, a timeout, or a 5xx: worth another try. A 4xx (refused, lease lost) is not.</summary>
    static bool Retriable(Exception e, CancellationToken ct) =>
        !ct.IsCancellationRequested && e switch
        {
            HttpRequestException h => h.StatusCode is null || (int)h.StatusCode >= 500 || h.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable,
            IOException => true,
            TaskCanceledException => true,   // HttpClient's timeout
            _ => false,
        };

    TimeSpan Backoff(int failures)
    {
        var wait = settings.Backoff * Math.Pow(2, failures - 1);
        return wait < MaxBackoff ? wait : MaxBackoff;
    }
}

/// <summary>A transfer that kept failing without progress through every retry (the network or the server, not the job).</summary>
public sealed class TransferFailedException(string message, Exception? inner) : Exception(message, inner);
