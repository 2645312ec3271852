// The whole path of a multi-rank job: a real server with --cpu-ranks places a job whose [compute]
// asks for 2 devices as 2 CPU ranks, launches them with mpirun, and records rank 0's events; the
// job's log holds both ranks' lines.
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server;

namespace Anneal.Training.Tests.Distributed;

[Collection(TorchRandomCollection.Name)]
public sealed class ServerRanksTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-server-ranks-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [MpiFact]
    public async Task A_job_asking_for_two_devices_runs_as_two_cpu_ranks()
    {
        await using var server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0",
            DataDir = Path.Combine(dir, "data"),
            TrainerCommand = TrainerEntryPoint.Command(),
            AllowModelDownload = false,
            CpuRanks = true,
        });
        using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);

        var form = new MultipartFormDataContent();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(File.ReadAllText(TinyFixture.WriteChatSet(dir))));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        form.Add(content, "file", "facts.jsonl");
        form.Add(new StringContent("fine-tune"), "purpose");
        var file = (await (await http.PostAsync("learning/files", form)).Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
        for (var i = 0; i < 200 && file.Status == FileStatus.Processing; i++)
        {
            await Task.Delay(50);
            file = (await http.GetFromJsonAsync<FileObject>($"learning/files/{file.Id}", AnnealJson.Options))!;
        }
        Assert.Equal(FileStatus.Ready, file.Status);

        var create = await http.PostAsync("learning/jobs", JsonContent.Create(new JsonObject
        {
            ["model"] = "anneal/tiny-qwen3",
            ["training_file_id"] = file.Id,
            ["hyperparameters"] = new JsonObject { ["total_steps"] = 2, ["per_device_batch"] = 2 },
            ["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 2, ["nodes"] = 1 } } },
        }));
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var job = (await create.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.True((await http.PostAsync($"learning/jobs/{job.Id}/start", null)).IsSuccessStatusCode);
        var deadline = DateTime.UtcNow.AddSeconds(150);
        while (!JobStatus.IsTerminal(job.Status) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
            job = (await http.GetFromJsonAsync<JobObject>($"learning/jobs/{job.Id}", AnnealJson.Options))!;
        }
        var log = await http.GetStringAsync($"learning/jobs/{job.Id}/logs");
        Assert.True(job.Status == JobStatus.Succeeded, $"{job.Status}: {job.Error?.Message}\n{log}");
        Assert.Equal($"fft:anneal/tiny-qwen3:{job.Id}", job.FineTunedModel);

        var events = (await http.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}/events?limit=500", AnnealJson.Options))!["events"]!.AsArray();
        Assert.Contains(events, e => e!["message"]!.GetValue<string>().Contains("runs as 2 data-parallel ranks on CPU ranks", StringComparison.Ordinal));
        Assert.DoesNotContain(events, e => e!["level"]!.GetValue<string>() == "warning");
        // Rank 0 alone reports progress: one event per step.
        Assert.Equal(2, events.Count(e => e!["type"]!.GetValue<string>() == EventTypes.Progress));
        Assert.Contains("rank 0 of 2", log);
        Assert.Contains("rank 1: rank 1 of 2", log);
    }
}
