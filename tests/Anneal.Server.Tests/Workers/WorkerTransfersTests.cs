// Resumable transfers between a worker and the server, over real HTTP: downloads answer ranges
// (206 + Content-Range, 416 past the end, the sha256 as ETag for If-Range), and uploads arrive in
// Content-Range chunks appended only at the offset the server has (409 upload_offset_mismatch with
// Upload-Offset otherwise), resumed after a connection broken mid-chunk from the byte the server
// kept, refused on every chunk once the lease is gone, and refused with the reason when the
// Content-Range is malformed. Runs on both stores.
using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Workers;

public class WorkerTransfersTests
{
    const string Token = "worker-secret";

    static Task<TestServer> Start(TimeSpan? lease = null) =>
        TestServer.StartAsync(o => o with { WorkerToken = Token, LeaseDuration = lease ?? TimeSpan.FromSeconds(30) });

    static HttpClient Worker(TestServer t)
    {
        var http = new HttpClient { BaseAddress = new Uri(t.Server.BaseUrl + "/api/workers/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        return http;
    }

    static async Task<WorkerClaim> ClaimRunningJobAsync(TestServer t, HttpClient worker)
    {
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var response = await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("host-1"), AnnealJson.Options);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!;
    }

    /// <summary>A checkpoint tar of about 100 KB (random bytes: the chunks differ), with its sha256.</summary>
    static (byte[] Tar, string Sha) BigCheckpointTar()
    {
        var dir = Directory.CreateTempSubdirectory("anneal-ckpt-").FullName;
        File.WriteAllText(Path.Combine(dir, "trainer_state.json"), "{\"step\":2}");
        File.WriteAllBytes(Path.Combine(dir, "optimizer.bin"), RandomNumberGenerator.GetBytes(100_000));
        using var ms = new MemoryStream();
        TarFile.CreateFromDirectory(dir, ms, includeBaseDirectory: false);
        Directory.Delete(dir, recursive: true);
        var bytes = ms.ToArray();
        return (bytes, Convert.ToHexStringLower(SHA256.HashData(bytes)));
    }

    static string Query(WorkerClaim c, long? attempt = null) => $"owner={Uri.EscapeDataString(c.Owner)}&attempt={attempt ?? c.Attempt}";

    static Task<HttpResponseMessage> Chunk(HttpClient worker, WorkerClaim c, string path, byte[] tar, string sha, long start, long end, long? attempt = null, string? contentRange = null)
    {
        var content = new ByteArrayContent(tar[(int)start..(int)(end + 1)]);
        content.Headers.Add(WorkerProtocol.Sha256Header, sha);
        content.Headers.TryAddWithoutValidation("Content-Range", contentRange ?? $"bytes {start}-{end}/{tar.Length}");
        return worker.PutAsync($"jobs/{c.JobId}/artifacts/{path}?{Query(c, attempt)}", content);
    }

    static async Task<HttpResponseMessage> Head(HttpClient worker, WorkerClaim c, string path, string sha, long? attempt = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Head, $"jobs/{c.JobId}/artifacts/{path}?{Query(c, attempt)}");
        request.Headers.Add(WorkerProtocol.Sha256Header, sha);
        return await worker.SendAsync(request);
    }

    static long Offset(HttpResponseMessage r) => long.Parse(r.Headers.GetValues(ArtifactUploads.OffsetHeader).Single());

    static string[] Partials(TestServer t) => Directory.GetFiles(Path.Combine(t.DataDir, "tmp"), "upload-*.partial");

    /// <summary>Sends <paramref name="sent"/> of its bytes, then breaks the connection (as a dropped network does).</summary>
    sealed class BrokenContent(byte[] bytes, int sent) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(bytes.AsMemory(0, sent));
            await stream.FlushAsync();
            await Task.Delay(300);   // let the server read what was sent before the connection breaks
            throw new IOException("connection dropped (test)");
        }

        protected override bool TryComputeLength(out long length)
        {
            length = bytes.Length;
            return true;
        }
    }

    [Fact]
    public async Task A_dataset_download_answers_a_range_with_206_and_its_sha256_as_etag_and_416_past_the_end()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var bytes = TestServer.Dataset(20);
        var file = await t.UploadReadyAsync(bytes);

        using (var request = new HttpRequestMessage(HttpMethod.Get, $"files/{file.Id}"))
        {
            request.Headers.Range = new RangeHeaderValue(100, null);
            request.Headers.IfRange = new RangeConditionHeaderValue($"\"{file.Sha256}\"");
            using var partial = await worker.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, partial.StatusCode);
            Assert.Equal($"bytes 100-{bytes.Length - 1}/{bytes.Length}", partial.Content.Headers.ContentRange!.ToString());
            Assert.Equal(bytes[100..], await partial.Content.ReadAsByteArrayAsync());
            Assert.Equal($"\"{file.Sha256}\"", partial.Headers.ETag!.Tag);
            Assert.Equal(file.Sha256, partial.Headers.GetValues(WorkerProtocol.Sha256Header).Single());
        }
        // An If-Range naming other bytes (the file changed since the first part came): the whole file, from 0.
        using (var request = new HttpRequestMessage(HttpMethod.Get, $"files/{file.Id}"))
        {
            request.Headers.Range = new RangeHeaderValue(100, null);
            request.Headers.IfRange = new RangeConditionHeaderValue($"\"{new string('0', 64)}\"");
            using var whole = await worker.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, whole.StatusCode);
            Assert.Equal(bytes, await whole.Content.ReadAsByteArrayAsync());
        }
        using (var request = new HttpRequestMessage(HttpMethod.Get, $"files/{file.Id}"))
        {
            request.Headers.Range = new RangeHeaderValue(bytes.Length, null);
            using var past = await worker.SendAsync(request);
            Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, past.StatusCode);
            Assert.Equal($"bytes */{bytes.Length}", past.Content.Headers.ContentRange!.ToString());
        }
    }

    [Fact]
    public async Task A_checkpoint_download_is_the_same_tar_each_time_so_a_range_of_it_resumes()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var claim = await ClaimRunningJobAsync(t, worker);
        var (tar, sha) = BigCheckpointTar();
        Assert.Equal(HttpStatusCode.OK, (await Chunk(worker, claim, "checkpoints/step-2", tar, sha, 0, tar.Length - 1)).StatusCode);

        var whole = await worker.GetByteArrayAsync($"jobs/{claim.JobId}/artifacts/checkpoints/step-2");
        var served = Convert.ToHexStringLower(SHA256.HashData(whole));
        using var request = new HttpRequestMessage(HttpMethod.Get, $"jobs/{claim.JobId}/artifacts/checkpoints/step-2");
        request.Headers.Range = new RangeHeaderValue(50_000, null);
        request.Headers.IfRange = new RangeConditionHeaderValue($"\"{served}\"");
        using var rest = await worker.SendAsync(request);
        Assert.Equal(HttpStatusCode.PartialContent, rest.StatusCode);
        Assert.Equal(whole[50_000..], await rest.Content.ReadAsByteArrayAsync());
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(t.DataDir, "tmp")));
    }

    [Fact]
    public async Task A_chunked_upload_broken_mid_chunk_resumes_from_the_byte_the_server_kept_and_yields_the_same_checkpoint()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var claim = await ClaimRunningJobAsync(t, worker);
        var (tar, sha) = BigCheckpointTar();
        const string path = "checkpoints/step-2";

        var head = await Head(worker, claim, path, sha);
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal(0, Offset(head));
        var first = await Chunk(worker, claim, path, tar, sha, 0, 39_999);
        Assert.Equal(HttpStatusCode.NoContent, first.StatusCode);
        Assert.Equal(40_000, Offset(first));

        // The second chunk breaks after 10,000 of its 40,000 bytes.
        var broken = new BrokenContent(tar[40_000..80_000], 10_000);
        broken.Headers.Add(WorkerProtocol.Sha256Header, sha);
        broken.Headers.TryAddWithoutValidation("Content-Range", $"bytes 40000-79999/{tar.Length}");
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => worker.PutAsync($"jobs/{claim.JobId}/artifacts/{path}?{Query(claim)}", broken));

        // HEAD says what arrived (503 while the broken request is still being read).
        long offset = -1;
        for (var i = 0; i < 100 && offset < 0; i++)
        {
            head = await Head(worker, claim, path, sha);
            if (head.StatusCode == HttpStatusCode.OK) offset = Offset(head);
            else
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, head.StatusCode);
                await Task.Delay(50);
            }
        }
        Assert.InRange(offset, 40_000, 50_000);

        // A chunk from the wrong offset is refused with the offset to send from.
        var wrong = await Chunk(worker, claim, path, tar, sha, 0, 39_999);
        var problem = await TestServer.ProblemAsync(wrong, HttpStatusCode.Conflict);
        Assert.Equal(ArtifactUploads.OffsetMismatch, problem["code"]!.GetValue<string>());
        Assert.Equal(offset, Offset(wrong));
        Assert.Equal(offset, problem["offset"]!.GetValue<long>());
        Assert.Contains($"send from byte {offset}", problem["detail"]!.GetValue<string>());

        Assert.Equal(HttpStatusCode.OK, (await Chunk(worker, claim, path, tar, sha, offset, tar.Length - 1)).StatusCode);
        var stored = Path.Combine(t.DataDir, "jobs", claim.JobId, "output", path);
        using (var reader = new TarReader(new MemoryStream(tar)))
            while (reader.GetNextEntry() is { } entry)
                if (entry.EntryType == TarEntryType.RegularFile)
                {
                    using var expected = new MemoryStream();
                    entry.DataStream!.CopyTo(expected);
                    Assert.Equal(expected.ToArray(), File.ReadAllBytes(Path.Combine(stored, entry.Name.TrimStart('.', '/'))));
                }
        Assert.Empty(Partials(t));
    }

    [Fact]
    public async Task A_fenced_workers_chunks_are_refused_and_its_partial_upload_is_removed_when_the_next_attempt_claims()
    {
        await using var t = await Start(lease: TimeSpan.FromSeconds(1.5));
        using var worker = Worker(t);
        var first = await ClaimRunningJobAsync(t, worker);
        var (tar, sha) = BigCheckpointTar();
        Assert.Equal(HttpStatusCode.NoContent, (await Chunk(worker, first, "final", tar, sha, 0, 9_999)).StatusCode);
        Assert.Single(Partials(t));
        // A chunk with another attempt's fencing token is refused outright.
        await TestServer.ProblemAsync(await Chunk(worker, first, "final", tar, sha, 10_000, 19_999, attempt: first.Attempt + 1), HttpStatusCode.Conflict);

        // The worker stalls: its lease lapses, the job is re-queued and claimed again.
        await t.WaitJobAsync(first.JobId, j => j.Status == JobStatus.Queued, 30);
        var response = await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("host-2"), AnnealJson.Options);
        var second = (await response.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!;
        Assert.Equal(2, second.Attempt);
        Assert.Empty(Partials(t));

        // The stale worker comes back: every chunk and HEAD is refused, and nothing of it is kept.
        var late = await TestServer.ProblemAsync(await Chunk(worker, first, "final", tar, sha, 10_000, tar.Length - 1), HttpStatusCode.Conflict);
        Assert.Equal(WorkerProtocol.LeaseLost, late["code"]!.GetValue<string>());
        await TestServer.ProblemAsync(await Chunk(worker, first, "final", tar, sha, 0, tar.Length - 1), HttpStatusCode.Conflict);
        Assert.Equal(HttpStatusCode.Conflict, (await Head(worker, first, "final", sha)).StatusCode);
        Assert.Empty(Partials(t));
        Assert.False(Directory.Exists(Path.Combine(t.DataDir, "jobs", first.JobId, "output", "final")));
    }

    [Theory]
    [InlineData("bytes 5-2/100", "Content-Range")]
    [InlineData("bytes=0-9/100", "Content-Range")]
    [InlineData("bytes 0-100/100", "Content-Range")]
    [InlineData("bytes 0-9/*", "Content-Range")]
    [InlineData("bytes 0-19/100", "Content-Length")]   // a 10-byte body
    public async Task A_malformed_content_range_is_refused_naming_the_header_and_the_expected_form(string contentRange, string field)
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var claim = await ClaimRunningJobAsync(t, worker);
        var (tar, sha) = BigCheckpointTar();
        var problem = await TestServer.ProblemAsync(await Chunk(worker, claim, "final", tar, sha, 0, 9, contentRange: contentRange), HttpStatusCode.BadRequest);
        Assert.Equal(field, problem["errors"]![0]!["field"]!.GetValue<string>());
        Assert.Contains(field == "Content-Range" ? "expected bytes START-END/TOTAL" : "does not match Content-Range", problem["detail"]!.GetValue<string>());
        Assert.Empty(Partials(t));
    }

    [Fact]
    public async Task Chunks_whose_bytes_do_not_match_the_sha256_are_refused_at_the_last_one_and_the_upload_starts_again_from_0()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var claim = await ClaimRunningJobAsync(t, worker);
        var (tar, sha) = BigCheckpointTar();
        var damaged = (byte[])tar.Clone();
        damaged[5] ^= 0x5a;
        Assert.Equal(HttpStatusCode.NoContent, (await Chunk(worker, claim, "final", damaged, sha, 0, 49_999)).StatusCode);
        var problem = await TestServer.ProblemAsync(await Chunk(worker, claim, "final", damaged, sha, 50_000, tar.Length - 1), HttpStatusCode.BadRequest);
        Assert.Contains("send it again from byte 0", problem["detail"]!.GetValue<string>());
        Assert.Empty(Partials(t));
        Assert.Equal(0, Offset(await Head(worker, claim, "final", sha)));
        Assert.Equal(HttpStatusCode.OK, (await Chunk(worker, claim, "final", tar, sha, 0, tar.Length - 1)).StatusCode);
        Assert.True(File.Exists(Path.Combine(t.DataDir, "jobs", claim.JobId, "output", "final", "optimizer.bin")));
    }

    [Fact]
    public async Task Artifacts_are_not_bounded_by_the_dataset_upload_limit_whole_or_in_chunks()
    {
        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = Token, MaxUploadBytes = 1024 });
        using var worker = Worker(t);
        var claim = await ClaimRunningJobAsync(t, worker);
        var dir = Directory.CreateTempSubdirectory("anneal-ckpt-").FullName;
        File.WriteAllText(Path.Combine(dir, "trainer_state.json"), "{\"step\":2}");
        File.WriteAllBytes(Path.Combine(dir, "optimizer.bin"), RandomNumberGenerator.GetBytes(3 * 1024 * 1024));
        using var ms = new MemoryStream();
        TarFile.CreateFromDirectory(dir, ms, includeBaseDirectory: false);
        Directory.Delete(dir, recursive: true);
        var tar = ms.ToArray();
        var sha = Convert.ToHexStringLower(SHA256.HashData(tar));

        var whole = new ByteArrayContent(tar);
        whole.Headers.Add(WorkerProtocol.Sha256Header, sha);
        var response = await worker.PutAsync($"jobs/{claim.JobId}/artifacts/checkpoints/step-2?{Query(claim)}", whole);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NoContent, (await Chunk(worker, claim, "final", tar, sha, 0, tar.Length - 1025)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Chunk(worker, claim, "final", tar, sha, tar.Length - 1024, tar.Length - 1)).StatusCode);
    }

    [Fact]
    public void A_partial_upload_has_one_writer_at_a_time_and_its_offset_waits_for_it()
    {
        var path = Path.Combine(Path.GetTempPath(), $"upload-test-{Guid.NewGuid():n}.partial");
        try
        {
            using (var first = ArtifactUploads.OpenExclusive(path))
            {
                Assert.NotNull(first);
                first!.Write([1, 2, 3]);
                Assert.Null(ArtifactUploads.OpenExclusive(path));   // a second request: 503, retry
                Assert.Null(ArtifactUploads.Offset(path));
            }
            Assert.Equal(3, ArtifactUploads.Offset(path));
        }
        finally { File.Delete(path); }
        Assert.Equal(0, ArtifactUploads.Offset(path));
    }
}
