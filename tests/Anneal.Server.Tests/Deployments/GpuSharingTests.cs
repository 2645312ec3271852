// One GPU shared by training and deployments (--inference-gpu N with N also in --gpus): the
// scheduler owns it. A "gpu" deployment takes it out of the jobs' pool while loading/ready (queued
// jobs wait, also across a restart) and gives it back when stopped; a deployment asking for it
// while a job trains on it is refused (409 device_busy) with the reason. GPUs are fake indices
// (script trainers record CUDA_VISIBLE_DEVICES); the inference process is a stand-in HTTP server.
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Tests.Stores;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Anneal.Server.Tests.Deployments;

public sealed class GpuSharingTests : IAsyncLifetime
{
    const string Model = "anneal/tiny-qwen3";
    const string VisionModel = "anneal/tiny-qwen3-vl";
    WebApplication _inference = null!;
    string _inferenceUrl = "";
    int _loads;

    public async Task InitializeAsync()
    {
        // Answers the one-token completion a deployment loads its model with.
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        _inference = builder.Build();
        _inference.MapPost("/v1/completions", async (HttpRequest request) =>
        {
            Interlocked.Increment(ref _loads);
            // The vision model stands for a model that does not load.
            if (JsonNode.Parse(await new StreamReader(request.Body).ReadToEndAsync())!["model"]!.GetValue<string>() == VisionModel)
                return Results.Json(new { error = new { message = "out of memory while loading", type = "server_error" } }, statusCode: 500);
            return Results.Json(new { id = "cmpl-1", @object = "text_completion", choices = new[] { new { index = 0, text = "!", finish_reason = "length" } } });
        });
        await _inference.StartAsync();
        _inferenceUrl = _inference.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    }

    public async Task DisposeAsync() => await _inference.DisposeAsync();

    Task<TestServer> Start(string trainer) => TestServer.StartAsync(o => o with
    {
        TrainerCommand = ScriptTrainer.Write(trainer), Gpus = ["3"], InferenceGpu = "3", InferenceUrl = _inferenceUrl, InferenceKey = "k",
    });

    static async Task<JsonObject> Deploy(TestServer t, string device, int expectedStatus, string model = Model)
    {
        var response = await t.Http.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = model, ["device"] = device });
        var body = (await response.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.True(expectedStatus == (int)response.StatusCode, $"{(int)response.StatusCode}: {body.ToJsonString()}");
        return body;
    }

    static async Task<JsonObject> WaitReady(TestServer t, string id, string status = DeploymentStatus.Ready)
    {
        JsonObject d;
        var i = 0;
        do
        {
            d = (await t.Http.GetFromJsonAsync<JsonObject>($"learning/deployments/{id}"))!;
            if (d["status"]!.GetValue<string>() != DeploymentStatus.Loading) break;
            await Task.Delay(50);
        } while (++i < 200);
        Assert.Equal(status, d["status"]!.GetValue<string>());
        return d;
    }

    static async Task<JobObject> Submit(TestServer t)
    {
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        return await t.StartJobAsync(job.Id);
    }

    static string Args(TestServer t, string jobId) => Path.Combine(t.DataDir, "jobs", jobId, "args.txt");

    [Fact]
    public async Task A_gpu_deployment_keeps_the_shared_gpu_from_jobs_until_it_is_stopped()
    {
        await using var t = await Start(ScriptTrainer.ShortSuccess);
        var dep = await Deploy(t, "gpu", 201);
        Assert.Equal("gpu", dep["device"]!.GetValue<string>());
        var id = dep["id"]!.GetValue<string>();
        await WaitReady(t, id);
        Assert.Equal(1, _loads);
        // The hold is the deployment's state, so it outlives a restart (a shared store keeps no per-server hold).
        if (!TestStore.IsPostgres) await t.RestartAsync();

        var job = await Submit(t);
        await Task.Delay(1500);
        Assert.Equal(JobStatus.Queued, (await t.GetJobAsync(job.Id)).Status);
        Assert.False(File.Exists(Args(t, job.Id)), "no trainer may start on a GPU a deployment holds");

        var stopped = await t.Http.DeleteAsync($"learning/deployments/{id}");
        Assert.Equal(DeploymentStatus.Stopped, (await stopped.Content.ReadFromJsonAsync<JsonObject>())!["status"]!.GetValue<string>());
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, done.Status);
        Assert.Equal("cuda=[3]", (await File.ReadAllLinesAsync(Args(t, job.Id)))[1]);
    }

    [Fact]
    public async Task A_gpu_deployment_is_refused_while_a_job_trains_on_the_shared_gpu_and_cpu_is_offered()
    {
        await using var t = await Start(ScriptTrainer.RunsUntilTerm);
        var job = await Submit(t);
        var started = Path.Combine(t.DataDir, "jobs", job.Id, "started");
        for (var i = 0; i < 400 && !File.Exists(started); i++) await Task.Delay(50);
        Assert.True(File.Exists(started), "the job never started");
        Assert.Equal("cuda=[3]", (await File.ReadAllLinesAsync(Args(t, job.Id)))[1]);

        var busy = await Deploy(t, "gpu", 409);
        Assert.Equal(ErrorCodes.DeviceBusy, busy["code"]!.GetValue<string>());
        Assert.Contains("GPU 3 is training a job", busy["detail"]!.GetValue<string>());
        Assert.Contains("\"device\": \"cpu\"", busy["errors"]![0]!["message"]!.GetValue<string>());
        Assert.Empty((await t.Http.GetFromJsonAsync<JsonObject>("learning/deployments"))!["data"]!.AsArray());
        Assert.Equal(0, _loads);

        // The CPU is free: a cpu deployment runs beside the job; while it runs the process stays on the CPU.
        var cpu = await Deploy(t, "cpu", 201);
        await WaitReady(t, cpu["id"]!.GetValue<string>());
        var cancelled = await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null);
        Assert.Equal(JobStatus.Cancelled, (await cancelled.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!.Status);
        var oneDevice = await Deploy(t, "gpu", 409);
        Assert.Contains("one device at a time", oneDevice["errors"]![0]!["message"]!.GetValue<string>());

        await t.Http.DeleteAsync($"learning/deployments/{cpu["id"]!.GetValue<string>()}");
        var gpu = await Deploy(t, "gpu", 201);
        await WaitReady(t, gpu["id"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_gpu_deployment_that_fails_to_load_gives_the_gpu_back()
    {
        await using var t = await Start(ScriptTrainer.ShortSuccess);
        var dep = await Deploy(t, "gpu", 201, VisionModel);
        var failed = await WaitReady(t, dep["id"]!.GetValue<string>(), DeploymentStatus.Failed);
        Assert.Contains("out of memory while loading", failed["error"]!["message"]!.GetValue<string>());

        var job = await Submit(t);
        var done = await t.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Succeeded, done.Status);
        Assert.Equal("cuda=[3]", (await File.ReadAllLinesAsync(Args(t, job.Id)))[1]);
    }
}
