// The ranks' meeting point for NCCL's unique id: the control plane's /internal/jobs/{id}/rendezvous
// (the server's RankRendezvous.cs, hosted here on its own) with the trainer's HttpRendezvous, and
// the job folder's FileRendezvous.
using System.Net;
using System.Net.Http.Headers;
using Anneal.Server.Runner;
using Anneal.Training.Distributed;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Anneal.Training.Tests.Distributed;

public sealed class RendezvousTests : IAsyncLifetime
{
    readonly RankRendezvousStore store = new();
    WebApplication? app;
    string baseUrl = "";
    readonly HttpClient http = new();

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Services.AddSingleton(store);
        app = builder.Build();
        app.MapRankRendezvousApi();
        await app.StartAsync();
        baseUrl = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
    }

    public async Task DisposeAsync()
    {
        http.Dispose();
        if (app is not null) await app.DisposeAsync();
    }

    string Url(string job) => $"{baseUrl}/internal/jobs/{job}/rendezvous";

    [Fact]
    public async Task Rank_0_publishes_and_the_others_get_the_bytes_even_when_they_ask_first()
    {
        var token = store.Open("job_a");
        var id = Enumerable.Range(0, 128).Select(i => (byte)(i * 7)).ToArray();
        var waiting = Task.Run(() => new HttpRendezvous(Url("job_a"), token, "nccl-id", TimeSpan.FromSeconds(20)).Await(128));
        await Task.Delay(300);
        Assert.False(waiting.IsCompleted);
        new HttpRendezvous(Url("job_a"), token, "nccl-id", TimeSpan.FromSeconds(20)).Publish(id);
        Assert.Equal(id, await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        // Publishing the same bytes again is harmless; other bytes are a conflict.
        new HttpRendezvous(Url("job_a"), token, "nccl-id", TimeSpan.FromSeconds(5)).Publish(id);
        var conflict = Assert.Throws<InvalidOperationException>(() => new HttpRendezvous(Url("job_a"), token, "nccl-id", TimeSpan.FromSeconds(5)).Publish([1, 2, 3]));
        Assert.Contains("409", conflict.Message);
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_the_reason()
    {
        var token = store.Open("job_b");
        async Task<(HttpStatusCode, string)> Send(HttpMethod method, string url, string? bearer, byte[]? body = null)
        {
            using var request = new HttpRequestMessage(method, url);
            if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
            if (body is not null) request.Content = new ByteArrayContent(body);
            using var response = await http.SendAsync(request);
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        var (status, text) = await Send(HttpMethod.Get, Url("job_none") + "/nccl-id", token);
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Contains("job job_none has no open rendezvous", text);
        (status, text) = await Send(HttpMethod.Put, Url("job_b") + "/nccl-id", "wrong", [1]);
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Contains("ANNEAL_RENDEZVOUS_TOKEN", text);
        (status, _) = await Send(HttpMethod.Get, Url("job_b") + "/nccl-id", null);
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        (status, text) = await Send(HttpMethod.Get, Url("job_b") + "/nccl-id?wait_s=61", token);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("wait_s \\\"61\\\": expected whole seconds from 0 to 60", text);
        (status, text) = await Send(HttpMethod.Get, Url("job_b") + "/nccl-id?wait_s=0", token);
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Contains("was not published within 0 s", text);
        (status, text) = await Send(HttpMethod.Put, Url("job_b") + "/nccl-id", token, new byte[5000]);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        Assert.Contains("more than 4096 bytes", text);

        // A closed launch (the ranks have exited) answers no more; a new launch has a new token.
        store.Close("job_b", token);
        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Get, Url("job_b") + "/nccl-id?wait_s=0", token)).Item1);
        Assert.NotEqual(token, store.Open("job_b"));
    }

    [Fact]
    public void The_job_folder_rendezvous_hands_over_the_id_of_this_launch_only()
    {
        var folder = Directory.CreateTempSubdirectory("anneal-rendezvous-").FullName;
        try
        {
            new FileRendezvous(folder, "run1", TimeSpan.FromSeconds(1)).Publish([9, 9]);
            Assert.Equal([9, 9], new FileRendezvous(folder, "run1", TimeSpan.FromSeconds(1)).Await(2));
            var stale = Assert.Throws<TimeoutException>(() => new FileRendezvous(folder, "run2", TimeSpan.FromMilliseconds(200)).Await(2));
            Assert.Contains("rank 0 did not publish the NCCL unique id", stale.Message);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
