// Jobs asking for several GPUs on workers: a worker offers the GPUs free on it now; a job whose
// [compute].gpu_count they cover takes that many (WorkerClaim.Ranks), and one they do not cover
// waits and says why. A CPU slot offering CPU ranks takes any gpu_count without a GPU type.
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Workers;

public class WorkerPlacementTests
{
    const string Token = "worker-secret";

    static async Task<JobObject> StartJobAsking(TestServer t, string fileId, JsonObject compute)
    {
        var body = (JsonObject)TestServer.JobBody(fileId);
        body["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = compute } };
        var created = await t.Http.PostAsync("learning/jobs", TestServer.Json(body));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var job = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        return await t.StartJobAsync(job.Id);
    }

    static async Task<WorkerClaim?> Claim(HttpClient worker, WorkerClaimRequest request)
    {
        using var response = await worker.PostAsJsonAsync("claim", request, AnnealJson.Options);
        if (response.StatusCode == HttpStatusCode.NoContent) return null;
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return await response.Content.ReadFromJsonAsync<WorkerClaim>(AnnealJson.Options);
    }

    [Fact]
    public async Task A_job_asking_for_two_gpus_takes_two_of_the_free_gpus_a_worker_offers_and_waits_while_fewer_are_free()
    {
        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = Token });
        using var worker = t.WorkerClient(Token);
        var file = await t.UploadReadyAsync();
        var pair = await StartJobAsking(t, file.Id, new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 2 });

        Assert.Null(await Claim(worker, new WorkerClaimRequest("h100-host", ["1"], "H100")));
        Assert.Contains(await t.EventsAsync(pair.Id), e => e.Type == Placement.WaitingEvent
            && e.Message == "Waiting for a worker that fits: requested 2 × H100; this worker has 1 free.");
        // CPU ranks are no GPUs of a type.
        Assert.Null(await Claim(worker, new WorkerClaimRequest("cpu-host", [], null, CpuRanks: true)));

        var claim = await Claim(worker, new WorkerClaimRequest("h100-host", ["1", "2", "3"], "H100"));
        Assert.Equal(pair.Id, claim!.JobId);
        Assert.Equal(2, claim.Ranks);

        // A job without [compute] takes one of the GPUs offered.
        var single = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(single.Id);
        Assert.Equal(1, (await Claim(worker, new WorkerClaimRequest("h100-host", ["3"], "H100")))!.Ranks);
    }

    [Fact]
    public async Task A_cpu_slot_with_cpu_ranks_runs_a_job_asking_for_three_gpus_as_three_ranks_and_a_plain_cpu_slot_leaves_it()
    {
        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = Token });
        using var worker = t.WorkerClient(Token);
        var file = await t.UploadReadyAsync();
        var job = await StartJobAsking(t, file.Id, new JsonObject { ["gpu_count"] = 3 });

        Assert.Null(await Claim(worker, new WorkerClaimRequest("cpu-host")));
        Assert.Contains(await t.EventsAsync(job.Id), e => e.Type == Placement.WaitingEvent && e.Message.Contains("requested 3 × GPU; this worker has 0 free"));
        var claim = await Claim(worker, new WorkerClaimRequest("cpu-host", [], null, CpuRanks: true));
        Assert.Equal(job.Id, claim!.JobId);
        Assert.Equal(3, claim.Ranks);
    }
}
