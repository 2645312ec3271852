// /api/workers without a real trainer: the HTTP side of `anneal worker`. A worker's lines are
// recorded like a local trainer's; an uploaded checkpoint is where a re-queued job resumes; a
// worker whose lease lapsed (it died, or stalled and came back) has every late write refused; and
// bad tokens, paths and checksums are refused with a reason. Runs on both stores.
using System.Formats.Tar;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Workers;

public class WorkersApiTests
{
    const string Token = "worker-secret";

    static Task<TestServer> Start(TimeSpan? lease = null) =>
        TestServer.StartAsync(o => o with { WorkerToken = Token, LeaseDuration = lease ?? TimeSpan.FromSeconds(30) });

    static HttpClient Worker(TestServer t, string? token = Token) => t.WorkerClient(token);

    static async Task<WorkerClaim> ClaimAsync(HttpClient worker)
    {
        var response = await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("host-1"), AnnealJson.Options);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return (await response.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!;
    }

    static async Task<HttpResponseMessage> Lines(HttpClient worker, WorkerClaim c, params string[] lines) =>
        await worker.PostAsJsonAsync($"jobs/{c.JobId}/lines", new WorkerLines(c.Owner, c.Attempt, lines), AnnealJson.Options);

    /// <summary>A tar of a complete checkpoint folder (state and optimizer files), with its sha256.</summary>
    static (byte[] Tar, string Sha) CheckpointTar(int step)
    {
        var dir = Directory.CreateTempSubdirectory("anneal-ckpt-").FullName;
        File.WriteAllText(Path.Combine(dir, "trainer_state.json"), $"{{\"step\":{step}}}");
        File.WriteAllText(Path.Combine(dir, "optimizer.bin"), "x");
        using var ms = new MemoryStream();
        TarFile.CreateFromDirectory(dir, ms, includeBaseDirectory: false);
        Directory.Delete(dir, recursive: true);
        var bytes = ms.ToArray();
        return (bytes, Convert.ToHexStringLower(SHA256.HashData(bytes)));
    }

    static async Task<HttpResponseMessage> Upload(HttpClient worker, WorkerClaim c, string path, byte[] tar, string sha, long? attempt = null)
    {
        var content = new ByteArrayContent(tar);
        content.Headers.Add(WorkerProtocol.Sha256Header, sha);
        return await worker.PutAsync($"jobs/{c.JobId}/artifacts/{path}?owner={Uri.EscapeDataString(c.Owner)}&attempt={attempt ?? c.Attempt}", content);
    }

    static string Progress(int step) => $$$"""{"type":"sft.progress","level":"info","message":"step {{{step}}}","data":{"step":{{{step}}},"total_steps":10,"loss":2.5}}""";

    [Fact]
    public async Task A_worker_claims_a_job_its_lines_are_recorded_and_its_exit_with_the_uploaded_final_model_succeeds_the_job()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        Assert.Equal(HttpStatusCode.NoContent, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("host-1"), AnnealJson.Options)).StatusCode);
        await t.StartJobAsync(job.Id);

        var claim = await ClaimAsync(worker);
        Assert.Equal(job.Id, claim.JobId);
        Assert.Equal(1, claim.Attempt);
        Assert.Equal(file.Sha256, claim.TrainingFile.Sha256);
        Assert.Null(claim.ResumeFrom);
        var bytes = await worker.GetByteArrayAsync($"files/{file.Id}");
        Assert.Equal(file.Sha256, Convert.ToHexStringLower(SHA256.HashData(bytes)));

        Assert.Equal(HttpStatusCode.OK, (await Lines(worker, claim, Progress(1), "a stray print")).StatusCode);
        var (tar, sha) = CheckpointTar(1);
        Assert.Equal(HttpStatusCode.OK, (await Upload(worker, claim, "final", tar, sha)).StatusCode);
        var completed = $$$"""{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"{{{WorkerProtocol.OutputPlaceholder}}}","final_path":"{{{WorkerProtocol.OutputPlaceholder}}}/final","trained_tokens":40}}""";
        var exit = await worker.PostAsJsonAsync($"jobs/{job.Id}/exit", new WorkerExit(claim.Owner, claim.Attempt, 0, [completed]), AnnealJson.Options);
        Assert.True(exit.IsSuccessStatusCode, await exit.Content.ReadAsStringAsync());

        var done = await t.GetJobAsync(job.Id);
        Assert.Equal(JobStatus.Succeeded, done.Status);
        Assert.Equal(1, done.Progress!.Step);
        Assert.True(File.Exists(Path.Combine(t.DataDir, "jobs", job.Id, "output", "final", "trainer_state.json")));
        var events = await t.EventsAsync(job.Id);
        Assert.Contains(events, e => e.Type == EventTypes.Running && e.Message.Contains("on worker host-1"));
        Assert.Contains(events, e => e.Message == "a stray print");
        // The worker's output folder is the server's copy in recorded paths, shown relative to the job.
        Assert.Equal("output/final", events.Single(e => e.Type == EventTypes.Completed).Data!["final_path"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_worker_gets_the_https_images_stored_with_a_dataset_by_their_sha256()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var file = await t.UploadReadyAsync();
        var plain = await worker.GetFromJsonAsync<Dictionary<string, string>>($"files/{file.Id}/images");
        Assert.Empty(plain!);   // a text dataset: nothing stored

        // As the server stores what it fetched while validating (ImageFetching → StoredImages).
        var red = "not really a png, stored bytes"u8.ToArray();
        Anneal.Core.Vision.StoredImages.Write(Path.Combine(t.DataDir, "files", file.Sha256),
            new Dictionary<string, byte[]> { ["https://images.example/red.png"] = red, ["https://images.example/same.png"] = red });
        var hash = Convert.ToHexStringLower(SHA256.HashData(red));
        var index = await worker.GetFromJsonAsync<Dictionary<string, string>>($"files/{file.Id}/images");
        Assert.Equal(new Dictionary<string, string> { ["https://images.example/red.png"] = hash, ["https://images.example/same.png"] = hash }, index);
        using var image = await worker.GetAsync($"files/{file.Id}/images/{hash}");
        Assert.Equal(HttpStatusCode.OK, image.StatusCode);
        Assert.Equal(red, await image.Content.ReadAsByteArrayAsync());
        Assert.Equal(hash, image.Headers.GetValues(WorkerProtocol.Sha256Header).Single());

        // Only the dataset's own images, named by a sha256; unknown files and other tokens get nothing.
        Assert.Equal(HttpStatusCode.NotFound, (await worker.GetAsync($"files/{file.Id}/images/{new string('a', 64)}")).StatusCode);
        var bad = await worker.GetAsync($"files/{file.Id}/images/..%2Findex.json");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("expected the 64 lowercase hex digits of its sha256", await bad.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await worker.GetAsync("files/file_missing/images")).StatusCode);
        using var stranger = Worker(t, "wrong-token");
        Assert.NotEqual(HttpStatusCode.OK, (await stranger.GetAsync($"files/{file.Id}/images/{hash}")).StatusCode);
    }

    [Fact]
    public async Task A_dead_workers_job_is_requeued_from_its_uploaded_checkpoint_and_its_late_writes_are_refused()
    {
        await using var t = await Start(lease: TimeSpan.FromSeconds(1.5));
        using var worker = Worker(t);
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var first = await ClaimAsync(worker);
        var (tar, sha) = CheckpointTar(2);
        Assert.Equal(HttpStatusCode.OK, (await Upload(worker, first, "checkpoints/step-2", tar, sha)).StatusCode);
        var saved = $$$"""{"type":"sft.checkpoint.saved","level":"info","message":"saved","data":{"step":2,"path":"{{{WorkerProtocol.OutputPlaceholder}}}/checkpoints/step-2"}}""";
        Assert.Equal(HttpStatusCode.OK, (await Lines(worker, first, Progress(2), saved)).StatusCode);

        // The worker stops heartbeating (it died, or stalled): the server re-queues the job.
        await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Queued, 30);
        var requeued = (await t.EventsAsync(job.Id)).Single(e => e.Type == EventTypes.Requeued);
        Assert.Equal("lease_expired", requeued.Data!["reason"]!.GetValue<string>());
        Assert.Equal(2, requeued.Data!["resume_step"]!.GetValue<long>());

        // Another worker takes attempt 2 and gets the checkpoint to resume from.
        var second = await ClaimAsync(worker);
        Assert.Equal(2, second.Attempt);
        Assert.Equal("checkpoints/step-2", second.ResumeFrom);
        using (var response = await worker.GetAsync($"jobs/{job.Id}/artifacts/checkpoints/step-2"))
        using (var download = new MemoryStream(await response.Content.ReadAsByteArrayAsync()))
        {
            // The tar comes with its sha256 for the worker to check, and leaves nothing in tmp/.
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(download.ToArray())), response.Headers.GetValues(WorkerProtocol.Sha256Header).Single());
            Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(t.DataDir, "tmp")));
            var names = new List<string>();
            using var reader = new TarReader(download);
            while (reader.GetNextEntry() is { } entry) names.Add(entry.Name.TrimStart('.', '/'));
            Assert.Contains("optimizer.bin", names);
        }

        // The first worker comes back: everything it sends is refused, and nothing of it is recorded.
        var before = (await t.EventsAsync(job.Id)).Count;
        Assert.Equal(HttpStatusCode.Conflict, (await Lines(worker, first, Progress(3))).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await worker.PostAsJsonAsync($"jobs/{job.Id}/heartbeat", new WorkerLease(first.Owner, first.Attempt), AnnealJson.Options)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Upload(worker, first, "final", tar, sha)).StatusCode);
        var lateExit = await worker.PostAsJsonAsync($"jobs/{job.Id}/exit", new WorkerExit(first.Owner, first.Attempt, 137, []), AnnealJson.Options);
        var problem = await TestServer.ProblemAsync(lateExit, HttpStatusCode.Conflict);
        Assert.Equal(WorkerProtocol.LeaseLost, problem["code"]!.GetValue<string>());
        Assert.Equal(before, (await t.EventsAsync(job.Id)).Count);
        Assert.Equal(JobStatus.Running, (await t.GetJobAsync(job.Id)).Status);
        Assert.False(Directory.Exists(Path.Combine(t.DataDir, "jobs", job.Id, "output", "final")));
        // The live attempt still works.
        Assert.Equal(HttpStatusCode.OK, (await worker.PostAsJsonAsync($"jobs/{job.Id}/heartbeat", new WorkerLease(second.Owner, second.Attempt), AnnealJson.Options)).StatusCode);
    }

    [Fact]
    public async Task A_job_asking_for_a_gpu_type_waits_for_a_worker_of_that_type_and_says_why()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var file = await t.UploadReadyAsync();
        var body = (JsonObject)TestServer.JobBody(file.Id);
        body["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 1 } } };
        var created = await t.Http.PostAsync("learning/jobs", TestServer.Json(body));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var h100Job = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        await t.StartJobAsync(h100Job.Id);

        // A CPU slot and an L4 slot pass it over; the job says why, once per reason.
        Assert.Equal(HttpStatusCode.NoContent, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("cpu-host"), AnnealJson.Options)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("l4-host", ["0"], "L4"), AnnealJson.Options)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("l4-host", ["0"], "L4"), AnnealJson.Options)).StatusCode);
        var waiting = (await t.EventsAsync(h100Job.Id)).Where(e => e.Type == Placement.WaitingEvent).Select(e => e.Message).ToList();
        // (The first: created before any worker registered, on a server that runs no trainer itself.)
        Assert.Equal(["No worker has registered in the last 24 h and this server runs no trainer itself; the job waits for a worker (anneal worker --server … --gpus …).",
                      "Waiting for a worker that fits: requested 1 × H100; this worker offers GPUs of no declared type.",
                      "Waiting for a worker that fits: requested 1 × H100; this worker offers L4."], waiting);
        Assert.Equal(JobStatus.Queued, (await t.GetJobAsync(h100Job.Id)).Status);

        // A job without [compute] queued after it still goes to the L4 slot; the H100 slot gets the H100 job.
        var anyJob = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(anyJob.Id);
        var l4 = await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("l4-host", ["0"], "l4"), AnnealJson.Options);
        Assert.Equal(anyJob.Id, (await l4.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!.JobId);
        var h100 = await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("h100-host", ["3"], "h100"), AnnealJson.Options);
        Assert.Equal(h100Job.Id, (await h100.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!.JobId);
    }

    [Fact]
    public async Task Bad_tokens_paths_checksums_and_bodies_are_refused_with_the_reason()
    {
        await using (var plain = await TestServer.StartAsync())
        {
            using var noWorkers = Worker(plain);
            await TestServer.ProblemAsync(await noWorkers.PostAsJsonAsync("claim", new WorkerClaimRequest("h")), HttpStatusCode.NotFound);
        }
        await using var t = await Start();
        using (var anonymous = Worker(t, token: null))
            await TestServer.ProblemAsync(await anonymous.PostAsJsonAsync("claim", new WorkerClaimRequest("h")), HttpStatusCode.Unauthorized);
        using (var wrong = Worker(t, token: "guess"))
            await TestServer.ProblemAsync(await wrong.PostAsJsonAsync("claim", new WorkerClaimRequest("h")), HttpStatusCode.Unauthorized);
        // An organisation's API key is not a worker token.
        using (var apiKey = Worker(t, token: t.ApiKey))
            await TestServer.ProblemAsync(await apiKey.PostAsJsonAsync("claim", new WorkerClaimRequest("h")), HttpStatusCode.Unauthorized);

        using var worker = Worker(t);
        var noName = await TestServer.ProblemAsync(await worker.PostAsJsonAsync("claim", new { gpus = new[] { "0" } }), HttpStatusCode.BadRequest);
        Assert.Contains("worker", noName["detail"]!.GetValue<string>());
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var claim = await ClaimAsync(worker);
        var (tar, sha) = CheckpointTar(1);
        var badPath = await TestServer.ProblemAsync(await Upload(worker, claim, "checkpoints/latest", tar, sha), HttpStatusCode.BadRequest);
        Assert.Contains("expected checkpoints/step-N or final", badPath["detail"]!.GetValue<string>());
        var badSha = await TestServer.ProblemAsync(await Upload(worker, claim, "final", tar, new string('0', 64)), HttpStatusCode.BadRequest);
        Assert.Contains("sha256", badSha["detail"]!.GetValue<string>());
        Assert.False(Directory.Exists(Path.Combine(t.DataDir, "jobs", job.Id, "output", "final")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(t.DataDir, "tmp")));
        await TestServer.ProblemAsync(await Upload(worker, claim, "final", tar, sha, attempt: claim.Attempt + 1), HttpStatusCode.Conflict);
        await TestServer.ProblemAsync(await worker.GetAsync("files/file_missing"), HttpStatusCode.NotFound);
    }

    /// <summary>A body sent in two halves: the second only once <see cref="Release"/> is set.</summary>
    sealed class GatedContent(byte[] bytes) : HttpContent
    {
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource HalfSent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(bytes.AsMemory(0, bytes.Length / 2));
            await stream.FlushAsync();
            HalfSent.SetResult();
            await Release.Task;
            await stream.WriteAsync(bytes.AsMemory(bytes.Length / 2));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = bytes.Length;
            return true;
        }
    }

    [Fact]
    public async Task An_upload_whose_lease_lapses_while_its_body_is_on_the_way_is_refused_and_keeps_the_newer_attempts_checkpoint()
    {
        await using var t = await Start(lease: TimeSpan.FromSeconds(1.5));
        using var worker = Worker(t);
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var first = await ClaimAsync(worker);

        // Attempt 1 starts uploading step-2 while it still holds the lease (the first check passes) ...
        var (staleTar, staleSha) = CheckpointTar(1);
        var gated = new GatedContent(staleTar);
        gated.Headers.Add(WorkerProtocol.Sha256Header, staleSha);
        var stale = worker.PutAsync($"jobs/{job.Id}/artifacts/checkpoints/step-2?owner={Uri.EscapeDataString(first.Owner)}&attempt={first.Attempt}", gated);
        await gated.HalfSent.Task;
        await Task.Delay(300);

        // ... then stalls: its lease lapses, attempt 2 claims the job and uploads its own step-2.
        await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Queued, 30);
        var second = await ClaimAsync(worker);
        Assert.Equal(2, second.Attempt);
        var (tar, sha) = CheckpointTar(2);
        Assert.Equal(HttpStatusCode.OK, (await Upload(worker, second, "checkpoints/step-2", tar, sha)).StatusCode);

        // The rest of attempt 1's body arrives: the check under the job's row lock refuses the swap.
        gated.Release.SetResult();
        var problem = await TestServer.ProblemAsync(await stale, HttpStatusCode.Conflict);
        Assert.Equal(WorkerProtocol.LeaseLost, problem["code"]!.GetValue<string>());
        var checkpoints = Path.Combine(t.DataDir, "jobs", job.Id, "output", "checkpoints");
        Assert.Equal("{\"step\":2}", File.ReadAllText(Path.Combine(checkpoints, "step-2", "trainer_state.json")));
        Assert.Equal(["step-2"], Directory.GetDirectories(checkpoints).Select(Path.GetFileName));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(t.DataDir, "tmp")));
    }
}
