// /healthz, /readyz and /metrics answer without an API key; the metrics count what the store holds.
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Operations;

public class OperationsTests
{
    [Fact]
    public async Task Health_readiness_and_prometheus_metrics_report_the_queue_leases_and_upload_bytes()
    {
        await using var t = await TestServer.StartAsync(o => o with { WorkerToken = "w" });
        using var anonymous = new HttpClient { BaseAddress = new Uri(t.Server.BaseUrl) };
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/healthz")).StatusCode);
        var ready = JsonNode.Parse(await anonymous.GetStringAsync("/readyz"))!;
        Assert.Equal("ready", ready["status"]!.GetValue<string>());
        Assert.Equal(Stores.TestStore.IsPostgres ? "postgres" : "sqlite", ready["store"]!.GetValue<string>());

        var file = await t.UploadReadyAsync();
        var queued = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(queued.Id);
        var waiting = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(waiting.Id);
        using var worker = new HttpClient { BaseAddress = new Uri(t.Server.BaseUrl + "/api/workers/") };
        worker.DefaultRequestHeaders.Authorization = new("Bearer", "w");
        Assert.Equal(HttpStatusCode.OK, (await worker.PostAsJsonAsync("claim", new WorkerClaimRequest("h"), AnnealJson.Options)).StatusCode);

        var response = await anonymous.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n');
        Assert.Contains("# TYPE anneal_queue_depth gauge", lines);
        Assert.Contains("anneal_queue_depth 1", lines);
        Assert.Contains("anneal_jobs{status=\"queued\"} 1", lines);
        Assert.Contains("anneal_jobs{status=\"running\"} 1", lines);
        Assert.Contains("anneal_job_leases{holder=\"worker\",state=\"live\"} 1", lines);
        Assert.Contains("anneal_job_leases{holder=\"server\",state=\"live\"} 0", lines);
        Assert.Contains("anneal_trainer_processes 0", lines);
        Assert.Contains($"anneal_upload_bytes {file.Bytes}", lines);
        Assert.Contains("anneal_worker_artifact_bytes_total 0", lines);
    }
}
