// The checkpoint a worker downloads to resume from is checked against the sha256 the server sends
// (X-Content-SHA256) before anything is extracted or run. A stand-in server answers the worker's
// calls with a claim that resumes from a checkpoint whose bytes do not match their checksum: the
// worker abandons the claim with the reason (no trainer, no exit, no lines: the lease is left to
// lapse so the server re-queues the job), and goes on to the next claim.
using System.Formats.Tar;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Server.Workers;

namespace Anneal.Cli.Tests.Worker;

public class WorkerCheckpointIntegrityTests
{
    [Fact]
    public async Task A_checkpoint_whose_bytes_do_not_match_the_servers_sha256_abandons_the_claim_before_anything_runs()
    {
        var dataset = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n"u8.ToArray();
        var datasetSha = Convert.ToHexStringLower(SHA256.HashData(dataset));
        var ckpt = Directory.CreateTempSubdirectory("anneal-ckpt-").FullName;
        File.WriteAllText(Path.Combine(ckpt, "trainer_state.json"), "{\"step\":2}");
        using var tarStream = new MemoryStream();
        TarFile.CreateFromDirectory(ckpt, tarStream, includeBaseDirectory: false);
        var tar = tarStream.ToArray();
        var sentSha = Convert.ToHexStringLower(SHA256.HashData(tar));
        tar[^1] ^= 0x5a; // damaged on the way: the bytes no longer match what the server hashed

        var claims = 0;
        var server = new StandInServer((c, path) =>
        {
            byte[] body = [];
        if (path == "/api/workers/claim" && Interlocked.Increment(ref claims) == 1)
            body = JsonSerializer.SerializeToUtf8Bytes(new WorkerClaim("job_1", "worker:test:1", 2, 30, "tiny-model",
                new TrainingSettings { TotalSteps = 4 }, false, new WorkerFile("file_1", "data.jsonl", datasetSha, dataset.Length), null,
                "checkpoints/step-2"), AnnealJson.Options);
        else if (path == "/api/workers/claim") c.Response.StatusCode = 204;
        else if (path == "/api/workers/files/file_1")
        {
            c.Response.Headers[WorkerProtocol.Sha256Header] = datasetSha;
            body = dataset;
        }
        else if (path == "/api/workers/files/file_1/images") body = "{}"u8.ToArray();
        else if (path == "/api/workers/jobs/job_1/artifacts/checkpoints/step-2")
        {
            c.Response.Headers[WorkerProtocol.Sha256Header] = sentSha;
            body = tar;
        }
        else if (path.EndsWith("/heartbeat", StringComparison.Ordinal)) { }
        else c.Response.StatusCode = 500; // lines, exit, uploads: never expected here
        if (body.Length > 0) c.Response.ContentType = "application/json";
            return body;
        });
        var (calls, port) = (server.Calls, server.Port);

        using var box = new CliSandbox();
        var workDir = Path.Combine(box.Dir, "worker");
        var result = await box.RunAsync("worker", "--server", $"http://127.0.0.1:{port}", "--token", "t", "--work-dir", workDir, "--offline", "--exit-when-idle");
        await server.StopAsync();

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"worker: job job_1 attempt 2: abandoned: checkpoint checkpoints/step-2: the downloaded tar has sha256 ", result.Out);
        Assert.Contains($"the server said {sentSha}; the server re-queues it when the lease lapses", result.Out);
        Assert.Contains("abandoning the claim", result.Err);
        lock (calls)
        {
            Assert.DoesNotContain(calls, c => c.EndsWith("/exit", StringComparison.Ordinal) || c.EndsWith("/lines", StringComparison.Ordinal) || c.StartsWith("PUT", StringComparison.Ordinal));
            Assert.Equal(2, calls.Count(c => c == "POST /api/workers/claim")); // it went on to the next claim
        }
        // Nothing of the damaged tar was extracted, and its download was not kept.
        var attempt = Path.Combine(workDir, "jobs", "job_1", "attempt-2");
        Assert.False(Directory.Exists(Path.Combine(attempt, "output", "checkpoints", "step-2")));
        Assert.Empty(Directory.GetFiles(attempt, "*.tar"));
        Directory.Delete(ckpt, recursive: true);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task The_https_images_stored_with_a_dataset_are_fetched_beside_it_and_checked(bool damaged)
    {
        var dataset = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n"u8.ToArray();
        var datasetSha = Convert.ToHexStringLower(SHA256.HashData(dataset));
        var image = "the stored image's bytes"u8.ToArray();
        var imageSha = Convert.ToHexStringLower(SHA256.HashData(image));
        var sent = damaged ? [.. image[..^1], (byte)(image[^1] ^ 0x5a)] : image;
        var claims = 0;
        var server = new StandInServer((c, path) =>
        {
            byte[] body = [];
        if (path == "/api/workers/claim" && Interlocked.Increment(ref claims) == 1)
            body = JsonSerializer.SerializeToUtf8Bytes(new WorkerClaim("job_1", "worker:test:1", 1, 30, "no-such-model",
                new TrainingSettings { TotalSteps = 4 }, false, new WorkerFile("file_1", "data.jsonl", datasetSha, dataset.Length), null,
                null), AnnealJson.Options);
        else if (path == "/api/workers/claim") c.Response.StatusCode = 204;
        else if (path == "/api/workers/files/file_1") body = dataset;
        else if (path == "/api/workers/files/file_1/images")
            body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string> { ["https://images.example/a.png"] = imageSha });
        else if (path == $"/api/workers/files/file_1/images/{imageSha}") body = sent;
        else if (path.EndsWith("/heartbeat", StringComparison.Ordinal)) { }
        else if (path.EndsWith("/exit", StringComparison.Ordinal)) body = "null"u8.ToArray();
        else c.Response.StatusCode = 500;
            return body;
        });
        var (calls, port) = (server.Calls, server.Port);

        using var box = new CliSandbox();
        var workDir = Path.Combine(box.Dir, "worker");
        var result = await box.RunAsync("worker", "--server", $"http://127.0.0.1:{port}", "--token", "t", "--work-dir", workDir, "--offline", "--exit-when-idle");
        await server.StopAsync();

        Assert.True(result.ExitCode == 0, result.ToString());
        var stored = Path.Combine(workDir, "files", datasetSha + ".images");
        if (damaged)
        {
            Assert.Contains($"abandoned: image {imageSha} of file file_1: the downloaded bytes do not match its sha256", result.Out);
            Assert.False(Directory.Exists(stored));
            lock (calls) Assert.DoesNotContain(calls, c => c.EndsWith("/exit", StringComparison.Ordinal));
        }
        else
        {
            // Stored as the server keeps them; the job then fails on its (unknown) model, after the images arrived.
            Assert.Equal(image, File.ReadAllBytes(Path.Combine(stored, imageSha)));
            Assert.Equal(image, Anneal.Core.Vision.StoredImages.Resolver(Path.Combine(workDir, "files", datasetSha))("https://images.example/a.png"));
            Assert.Contains("failed before training", result.Out);
        }
    }

    /// <summary>Answers the worker's calls on a free loopback port with <c>answer(context, path)</c>'s bytes, recording each call.</summary>
    sealed class StandInServer
    {
        readonly HttpListener _listener = new();
        readonly Task _serving;
        public List<string> Calls { get; } = [];
        public int Port { get; } = FreePort();

        public StandInServer(Func<HttpListenerContext, string, byte[]> answer)
        {
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            _listener.Start();
            _serving = Task.Run(async () =>
            {
                while (_listener.IsListening)
                {
                    HttpListenerContext c;
                    try { c = await _listener.GetContextAsync(); }
                    catch (Exception e) when (e is HttpListenerException or ObjectDisposedException) { return; }
                    var path = c.Request.Url!.AbsolutePath;
                    lock (Calls) Calls.Add($"{c.Request.HttpMethod} {path}");
                    await c.Response.OutputStream.WriteAsync(answer(c, path));
                    c.Response.Close();
                }
            });
        }

        public async Task StopAsync()
        {
            _listener.Stop();
            await _serving;
            _listener.Close();
        }
    }

    static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
