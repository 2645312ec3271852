// Workers register their slots, and job creation refuses a [compute] request nothing can ever run:
// 422 compute_unavailable naming the request and every offer (workers seen within the window, and
// the server's own GPUs); a job a registered worker fits is accepted; a worker not seen within the
// window does not count until it claims again; with no capacity known at all the job is accepted
// and says it waits for a worker. Bad registrations are refused naming the field; the list needs
// the worker token or an admin key. Runs on both stores.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Workers;

public class WorkerRegistryTests
{
    const string Token = "worker-secret";

    static Task<TestServer> Start(Func<ServerOptions, ServerOptions>? more = null) =>
        TestServer.StartAsync(o => (more ?? (x => x))(o with { WorkerToken = Token }));

    static HttpClient Worker(TestServer t, string? token = Token) => t.WorkerClient(token);

    static async Task Register(HttpClient worker, string name, string? gpuType, int gpusPerSlot, int slots)
    {
        var response = await worker.PostAsJsonAsync("register", new WorkerRegistration(name, gpuType, gpusPerSlot, slots), AnnealJson.Options);
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
    }

    static Task<HttpResponseMessage> CreateWith(TestServer t, string fileId, JsonObject? compute)
    {
        var body = (JsonObject)TestServer.JobBody(fileId);
        if (compute is not null) body["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = compute } };
        return t.Http.PostAsync("learning/jobs", TestServer.Json(body));
    }

    static JsonObject Compute(string? type, int count) => new() { ["gpu_type"] = type, ["gpu_count"] = count };

    [Fact]
    public async Task A_job_no_registered_worker_can_ever_run_is_refused_naming_the_request_and_what_the_workers_offer()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        await Register(worker, "host-a", "A100", 1, 2);
        await Register(worker, "host-b", null, 0, 1);
        var file = await t.UploadReadyAsync();

        var refused = await TestServer.ProblemAsync(await CreateWith(t, file.Id, Compute("H100", 2)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.ComputeUnavailable, refused["code"]!.GetValue<string>());
        var detail = refused["detail"]!.GetValue<string>();
        Assert.Contains("requested 2 × H100; workers seen in the last 24 h offer: ", detail);
        Assert.Contains("1 × A100 (host-a, 2 slots)", detail);
        Assert.Contains("CPU (host-b, 1 slot)", detail);
        Assert.Equal("metadata.effective_config.compute", refused["errors"]![0]!["field"]!.GetValue<string>());
        Assert.Equal(2, refused["offers"]!.AsArray().Count);
        var jobs = await t.Http.GetFromJsonAsync<JsonObject>("learning/jobs");
        Assert.Empty(jobs!["jobs"]!.AsArray());   // nothing stored

        // What a registered worker has is accepted (a type named differently in case too), and so is a job without [compute].
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute("a100", 1))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute(null, 1))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, null)).StatusCode);
        // Two GPUs of any type: no slot has two.
        await TestServer.ProblemAsync(await CreateWith(t, file.Id, Compute(null, 2)), HttpStatusCode.UnprocessableEntity);
    }

    [Fact]
    public async Task A_worker_not_seen_within_the_window_does_not_count_until_it_claims_again()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        await Register(worker, "h100-host", "H100", 1, 1);
        await Register(worker, "a100-host", "A100", 1, 1);
        var file = await t.UploadReadyAsync();
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute("H100", 1))).StatusCode);

        // Last seen two days ago (the window is 24 h).
        Assert.Equal(1, t.Sql("UPDATE workers SET last_seen_ms = last_seen_ms - 172800000 WHERE name = 'h100-host'"));
        var refused = await TestServer.ProblemAsync(await CreateWith(t, file.Id, Compute("H100", 1)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("offer: 1 × A100 (a100-host, 1 slot)", refused["detail"]!.GetValue<string>());
        Assert.DoesNotContain("h100-host", refused["detail"]!.GetValue<string>());
        var listed = (await worker.GetFromJsonAsync<WorkerList>("", AnnealJson.Options))!.Data;
        Assert.False(listed.Single(w => w.Name == "h100-host").Recent);
        Assert.True(listed.Single(w => w.Name == "a100-host").Recent);

        // It comes back: its (empty) claim marks it seen.
        Assert.Equal(HttpStatusCode.NoContent, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("h100-host", ["0"], "H100"), AnnealJson.Options)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute("H100", 1))).StatusCode);
    }

    [Fact]
    public async Task A_heartbeat_marks_its_worker_seen()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        await Register(worker, "gpu-host-1", "L4", 1, 1);
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var claim = (await (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("gpu-host-1", ["0"], "L4"), AnnealJson.Options)).Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options))!;
        Assert.Equal(1, t.Sql("UPDATE workers SET last_seen_ms = last_seen_ms - 172800000"));
        Assert.False(Assert.Single((await worker.GetFromJsonAsync<WorkerList>("", AnnealJson.Options))!.Data).Recent);
        Assert.Equal(HttpStatusCode.OK, (await worker.PostAsJsonAsync($"jobs/{job.Id}/heartbeat", new WorkerLease(claim.Owner, claim.Attempt), AnnealJson.Options)).StatusCode);
        Assert.True(Assert.Single((await worker.GetFromJsonAsync<WorkerList>("", AnnealJson.Options))!.Data).Recent);
    }

    [Fact]
    public async Task With_no_worker_registered_and_no_trainer_here_a_job_is_accepted_and_says_it_waits_for_a_worker()
    {
        await using var t = await Start();
        var file = await t.UploadReadyAsync();
        var created = await CreateWith(t, file.Id, Compute("H100", 8));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var job = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        var waiting = Assert.Single(await t.EventsAsync(job.Id), e => e.Type == Placement.WaitingEvent);
        Assert.Equal("warning", waiting.Level);
        Assert.Contains("No worker has registered in the last 24 h and this server runs no trainer itself", waiting.Message);
    }

    [Fact]
    public async Task The_servers_own_gpus_count_and_a_request_beyond_them_and_every_worker_is_refused_naming_both()
    {
        await using var t = await Start(o => o with { TrainerCommand = ["/bin/false"], Gpus = ["3"] });
        var file = await t.UploadReadyAsync();
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute("H100", 1))).StatusCode);
        var refused = await TestServer.ProblemAsync(await CreateWith(t, file.Id, Compute("H100", 4)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("requested 4 × H100; this server trains on 1 GPU (--gpus 3); no worker was seen in the last 24 h", refused["detail"]!.GetValue<string>());

        using var worker = Worker(t);
        await Register(worker, "big-host", "H100", 4, 1);
        Assert.Equal(HttpStatusCode.Created, (await CreateWith(t, file.Id, Compute("H100", 4))).StatusCode);
    }

    [Theory]
    [InlineData("""{"gpus_per_slot":1,"slots":1}""", "worker", "is required")]
    [InlineData("""{"worker":"  ","gpus_per_slot":1,"slots":1}""", "worker", "non-empty string")]
    [InlineData("""{"worker":"h","gpus_per_slot":-1,"slots":1}""", "gpus_per_slot", "expected an integer from 0 (CPU)")]
    [InlineData("""{"worker":"h","gpus_per_slot":"two","slots":1}""", "gpus_per_slot", "expected an integer")]
    [InlineData("""{"worker":"h","gpus_per_slot":1,"slots":0}""", "slots", "expected an integer from 1")]
    [InlineData("""{"worker":"h","gpus_per_slot":1}""", "slots", "is required")]
    [InlineData("""{"worker":"h","gpu_type":5,"gpus_per_slot":1,"slots":1}""", "gpu_type", "a string or null")]
    [InlineData("""{"worker":"h","gpus_per_slot":1,"slots":1,"gpu":"H100"}""", "gpu", "Unknown field 'gpu'")]
    public async Task A_bad_registration_is_refused_naming_the_field_and_what_it_expects(string body, string field, string message)
    {
        await using var t = await Start();
        using var worker = Worker(t);
        var response = await worker.PostAsync("register", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        var problem = await TestServer.ProblemAsync(response, HttpStatusCode.BadRequest);
        Assert.Equal(field, problem["errors"]![0]!["field"]!.GetValue<string>());
        Assert.Contains(message, problem["detail"]!.GetValue<string>());
        Assert.Empty((await worker.GetFromJsonAsync<WorkerList>("", AnnealJson.Options))!.Data);
        await TestServer.ProblemAsync(await worker.PostAsync("register", new StringContent("{not json", System.Text.Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);
        await TestServer.ProblemAsync(await worker.PostAsync("register", new StringContent("[]", System.Text.Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task The_worker_list_answers_the_worker_token_and_admin_keys_only()
    {
        await using var t = await Start();
        using var worker = Worker(t);
        await Register(worker, "gpu-host-1", "L4", 1, 2);
        var listed = Assert.Single((await t.Http.GetFromJsonAsync<WorkerList>("workers", AnnealJson.Options))!.Data);
        Assert.Equal(("gpu-host-1", "L4", 1, 2, true), (listed.Name, listed.GpuType, listed.GpusPerSlot, listed.Slots, listed.Recent));
        Assert.Single((await worker.GetFromJsonAsync<WorkerList>("", AnnealJson.Options))!.Data);

        var key = await (await t.Http.PostAsync("keys", TestServer.Json(new JsonObject { ["admin"] = false }))).Content.ReadFromJsonAsync<JsonObject>();
        using var plain = t.Client(key!["key"]!.GetValue<string>());
        await TestServer.ProblemAsync(await plain.GetAsync("workers"), HttpStatusCode.Forbidden);
        using var anonymous = t.Client(null);
        await TestServer.ProblemAsync(await anonymous.GetAsync("workers"), HttpStatusCode.Unauthorized);
    }
}
