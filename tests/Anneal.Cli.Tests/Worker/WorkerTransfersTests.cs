// The worker's resumable transfers (WorkerTransfers) against a real server over real HTTP, with the
// network's failures put between them by a message handler: a download whose body breaks part-way
// (and a 503) continues with `Range: bytes=<have>-` and `If-Range` and ends with the right sha256;
// an upload whose chunk breaks part-way asks the server where to go on (HEAD) and the checkpoint
// arrives whole; a checkpoint tar cut mid-download resumes too.
using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Anneal.Cli.Worker;
using Anneal.Core.Contracts;
using Anneal.Server;
using Anneal.Server.Workers;

namespace Anneal.Cli.Tests.Worker;

public class WorkerTransfersTests
{
    const string Token = "test-worker-token";
    static readonly TransferSettings Fast = new() { ChunkBytes = 16 * 1024, Retries = 3, Backoff = TimeSpan.FromMilliseconds(20) };

    /// <summary>
    /// Between the worker and the server: answers the first GET 503 when asked, breaks the first
    /// <paramref name="cutResponses"/> GET bodies after <paramref name="cutAfter"/> bytes, and the
    /// <paramref name="breakPut"/>-th PUT half-way through its body; records every request.
    /// </summary>
    sealed class Network(int cutResponses = 0, long cutAfter = 0, bool firstGetUnavailable = false, int breakPut = 0) : DelegatingHandler(new SocketsHttpHandler())
    {
        public List<string> Requests { get; } = [];
        int _gets, _puts, _cuts;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            var seen = string.Join(' ', new object?[] { request.Method, request.RequestUri!.AbsolutePath, request.Headers.Range, request.Content?.Headers.ContentRange }.Where(p => p is not null));
            lock (Requests) Requests.Add(seen);
            if (request.Method == HttpMethod.Get && firstGetUnavailable && Interlocked.Increment(ref _gets) == 1)
                return new HttpResponseMessage(HttpStatusCode.ServiceUnavailable) { RequestMessage = request };
            if (request.Method == HttpMethod.Put && Interlocked.Increment(ref _puts) == breakPut)
            {
                var bytes = await request.Content!.ReadAsByteArrayAsync(ct);
                var broken = new BrokenContent(bytes, bytes.Length / 2);
                foreach (var h in request.Content.Headers) broken.Headers.TryAddWithoutValidation(h.Key, h.Value);
                request.Content = broken;
            }
            var response = await base.SendAsync(request, ct);
            if (request.Method == HttpMethod.Get && response.IsSuccessStatusCode && Interlocked.Increment(ref _cuts) <= cutResponses)
            {
                var cut = new StreamContent(new CutStream(await response.Content.ReadAsStreamAsync(ct), cutAfter));
                foreach (var h in response.Content.Headers) cut.Headers.TryAddWithoutValidation(h.Key, h.Value);
                response.Content = cut;
            }
            return response;
        }
    }

    /// <summary>A response body that breaks after <paramref name="limit"/> bytes, as a dropped connection does.</summary>
    sealed class CutStream(Stream inner, long limit) : Stream
    {
        long _read;
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            if (_read >= limit) throw new IOException("connection reset (test)");
            var n = await inner.ReadAsync(buffer[..(int)Math.Min(buffer.Length, limit - _read)], ct);
            _read += n;
            return n;
        }
        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>A request body that breaks after <paramref name="sent"/> of its bytes.</summary>
    sealed class BrokenContent(byte[] bytes, int sent) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(bytes.AsMemory(0, sent));
            await stream.FlushAsync();
            await Task.Delay(200);
            throw new IOException("connection dropped (test)");
        }

        protected override bool TryComputeLength(out long length)
        {
            length = bytes.Length;
            return true;
        }
    }

    static HttpClient WorkerClient(RunningServer server, HttpMessageHandler handler)
    {
        var http = new HttpClient(handler) { BaseAddress = new Uri(server.BaseUrl + "/api/workers/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        return http;
    }

    static async Task<(RunningServer Server, string DataDir)> StartServerAsync()
    {
        var dataDir = Directory.CreateTempSubdirectory("anneal-cli-server-").FullName;
        var server = await ServerHost.StartAsync(new ServerOptions { Urls = "http://127.0.0.1:0", DataDir = dataDir, WorkerToken = Token, AllowModelDownload = false, Database = TestStore.DatabaseFor(dataDir) });
        return (server, dataDir);
    }

    static async Task<FileObject> UploadReadyAsync(RunningServer server, string dataset)
    {
        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        var file = await client.UploadFileAsync(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(dataset)), "data.jsonl", "fine-tune", default);
        for (var i = 0; i < 600 && file.Status == FileStatus.Processing; i++)
        {
            await Task.Delay(50);
            file = await client.GetFileAsync(file.Id, default);
        }
        Assert.Equal(FileStatus.Ready, file.Status);
        return file;
    }

    static async Task<string> Sha256Async(string path)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream));
    }

    [Fact]
    public async Task A_dataset_download_broken_part_way_resumes_with_a_range_and_ends_with_the_right_sha256()
    {
        var (server, dataDir) = await StartServerAsync();
        await using var _ = server;
        var file = await UploadReadyAsync(server, Samples.Dataset(3000));
        Assert.True(file.Bytes > 100_000, $"{file.Bytes} bytes");
        var network = new Network(cutResponses: 2, cutAfter: 40_000, firstGetUnavailable: true);
        using var http = WorkerClient(server, network);
        var partial = Path.Combine(dataDir, "download.partial");
        var log = new StringWriter();

        var named = await new WorkerTransfers(http, log, Fast).DownloadAsync($"files/{file.Id}", partial, file.Sha256, default);

        Assert.Equal(file.Sha256, named);
        Assert.Equal(file.Sha256, await Sha256Async(partial));
        // 503, then the whole file cut at 40,000 bytes, then from 40,000 cut again, then the rest.
        Assert.Equal([$"GET /api/workers/files/{file.Id}", $"GET /api/workers/files/{file.Id}", $"GET /api/workers/files/{file.Id} bytes=40000-",
                      $"GET /api/workers/files/{file.Id} bytes=80000-"], network.Requests);
        Assert.Contains("broke at byte 40000", log.ToString());
    }

    [Fact]
    public async Task A_download_that_keeps_breaking_without_progress_gives_up_after_the_retries()
    {
        var (server, dataDir) = await StartServerAsync();
        await using var _ = server;
        var file = await UploadReadyAsync(server, Samples.Dataset(50));
        var network = new Network(cutResponses: 100, cutAfter: 0);
        using var http = WorkerClient(server, network);
        var failed = await Assert.ThrowsAsync<TransferFailedException>(() =>
            new WorkerTransfers(http, TextWriter.Null, Fast).DownloadAsync($"files/{file.Id}", Path.Combine(dataDir, "d.partial"), file.Sha256, default));
        Assert.Contains($"failed {Fast.Retries + 1} times in a row, the last at byte 0 (connection reset (test))", failed.Message);
        Assert.Equal(1 + Fast.Retries, network.Requests.Count);
    }

    [Fact]
    public async Task A_checkpoint_upload_broken_mid_chunk_resumes_where_the_server_is_and_its_download_resumes_too()
    {
        var (server, dataDir) = await StartServerAsync();
        await using var _ = server;
        var file = await UploadReadyAsync(server, Samples.Dataset(10));
        using (var api = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/") })
        {
            api.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);
            var created = await api.PostAsJsonAsync("learning/jobs", new JsonObject
            {
                ["model"] = Samples.TinyModel, ["training_type"] = "sft_offline", ["training_file_id"] = file.Id,
                ["hyperparameters"] = new JsonObject { ["total_steps"] = 2 },
            });
            Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
            var job = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
            Assert.True((await api.PostAsync($"learning/jobs/{job.Id}/start", null)).IsSuccessStatusCode);
        }
        var network = new Network(breakPut: 2);
        using var http = WorkerClient(server, network);
        var claimed = await http.PostAsJsonAsync("claim", new WorkerClaimRequest("host-1"), AnnealJson.Options);
        var claim = (await claimed.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!;
        lock (network.Requests) network.Requests.Clear();

        var folder = Directory.CreateTempSubdirectory("anneal-ckpt-").FullName;
        File.WriteAllText(Path.Combine(folder, "trainer_state.json"), "{\"step\":2}");
        var optimizer = RandomNumberGenerator.GetBytes(100_000);
        File.WriteAllBytes(Path.Combine(folder, "optimizer.bin"), optimizer);
        var tar = Path.Combine(dataDir, "upload.tar");
        await TarFile.CreateFromDirectoryAsync(folder, tar, includeBaseDirectory: false);
        var log = new StringWriter();
        var transfers = new WorkerTransfers(http, log, Fast);
        var url = $"jobs/{claim.JobId}/artifacts/checkpoints/step-2?owner={Uri.EscapeDataString(claim.Owner)}&attempt={claim.Attempt}";
        await transfers.UploadAsync(url, tar, await Sha256Async(tar), default);

        var stored = Path.Combine(dataDir, "jobs", claim.JobId, "output", "checkpoints", "step-2");
        Assert.Equal(optimizer, File.ReadAllBytes(Path.Combine(stored, "optimizer.bin")));
        List<string> requests;
        lock (network.Requests) requests = [.. network.Requests];
        // Chunk 2 broke; the worker asked where the server was, and went on from that byte (not from 16384).
        Assert.Equal($"PUT /api/workers/jobs/{claim.JobId}/artifacts/checkpoints/step-2 bytes 16384-32767/{new FileInfo(tar).Length}", requests[1]);
        var resumed = requests.FindIndex(2, r => r.StartsWith("PUT ", StringComparison.Ordinal));
        Assert.True(resumed > 2 && requests[2..resumed].All(r => r.StartsWith("HEAD ", StringComparison.Ordinal)), string.Join("\n", requests));
        var resumedAt = long.Parse(requests[resumed].Split(' ')[^1].Split('-')[0]);
        Assert.InRange(resumedAt, 16384, 16384 + 8192);
        Assert.Contains("upload to", log.ToString());
        Assert.Empty(Directory.GetFiles(Path.Combine(dataDir, "tmp"), "upload-*"));

        // The same checkpoint downloaded to resume from, cut at 30,000 bytes: resumed, and the same tar the server hashed.
        var cutting = new Network(cutResponses: 1, cutAfter: 30_000);
        using var http2 = WorkerClient(server, cutting);
        var partial = Path.Combine(dataDir, "resume.tar");
        var named = await new WorkerTransfers(http2, TextWriter.Null, Fast).DownloadAsync($"jobs/{claim.JobId}/artifacts/checkpoints/step-2", partial, null, default);
        Assert.Equal(named, await Sha256Async(partial));
        Assert.Equal([$"GET /api/workers/jobs/{claim.JobId}/artifacts/checkpoints/step-2", $"GET /api/workers/jobs/{claim.JobId}/artifacts/checkpoints/step-2 bytes=30000-"], cutting.Requests);
        Directory.Delete(folder, recursive: true);
    }
}
