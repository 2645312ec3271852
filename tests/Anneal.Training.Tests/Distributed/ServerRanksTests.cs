// The whole path of a multi-rank job: a real server with --cpu-ranks places a job whose [compute]
// asks for N devices as N CPU ranks, launches them with mpirun, and records rank 0's events; the
// job's log holds every rank's lines. The spec's own TOML (gpu_count = 4), made tiny, runs as 4
// ranks and trains like one process with 4× the accumulation; a rank that dies fails the job.
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Anneal.Core.Config;
using Anneal.Core.Contracts;
using Anneal.Server;
using Anneal.Training.Tests.Tokenization;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Distributed;

[Collection(TorchRandomCollection.Name)]
public sealed partial class ServerRanksTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-server-ranks-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    async Task<(RunningServer Server, HttpClient Http)> StartAsync()
    {
        var server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0",
            DataDir = Path.Combine(dir, "data"),
            TrainerCommand = TrainerEntryPoint.Command(),
            AllowModelDownload = false,
            CpuRanks = true,
        });
        var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);
        return (server, http);
    }

    static async Task<string> UploadAsync(HttpClient http, string path)
    {
        var form = new MultipartFormDataContent();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(File.ReadAllText(path)));
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
        return file.Id;
    }

    static async Task<JobObject> StartJobAsync(HttpClient http, JsonObject request)
    {
        var create = await http.PostAsync("learning/jobs", JsonContent.Create(request));
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var job = (await create.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.True((await http.PostAsync($"learning/jobs/{job.Id}/start", null)).IsSuccessStatusCode);
        return job;
    }

    static async Task<JobObject> WaitAsync(HttpClient http, JobObject job, TimeSpan limit)
    {
        var deadline = DateTime.UtcNow + limit;
        while (!JobStatus.IsTerminal(job.Status) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
            job = (await http.GetFromJsonAsync<JobObject>($"learning/jobs/{job.Id}", AnnealJson.Options))!;
        }
        return job;
    }

    static async Task<JsonArray> EventsAsync(HttpClient http, string jobId) =>
        (await http.GetFromJsonAsync<JsonObject>($"learning/jobs/{jobId}/events?limit=500", AnnealJson.Options))!["events"]!.AsArray();

    static List<double> Losses(JsonArray events) =>
        events.Where(e => e!["type"]!.GetValue<string>() == EventTypes.Progress).Select(e => e!["data"]!["loss"]!.GetValue<double>()).ToList();

    [MpiFact]
    public async Task A_job_asking_for_two_devices_runs_as_two_cpu_ranks()
    {
        var (server, http) = await StartAsync();
        await using var _ = server;
        using var __ = http;
        var fileId = await UploadAsync(http, TinyFixture.WriteChatSet(dir));
        var job = await StartJobAsync(http, new JsonObject
        {
            ["model"] = "anneal/tiny-qwen3",
            ["training_file_id"] = fileId,
            ["hyperparameters"] = new JsonObject { ["total_steps"] = 2, ["per_device_batch"] = 2 },
            ["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 2, ["nodes"] = 1 } } },
        });
        job = await WaitAsync(http, job, TimeSpan.FromSeconds(150));
        var log = await http.GetStringAsync($"learning/jobs/{job.Id}/logs");
        Assert.True(job.Status == JobStatus.Succeeded, $"{job.Status}: {job.Error?.Message}\n{log}");
        Assert.Equal($"fft:anneal/tiny-qwen3:{job.Id}", job.FineTunedModel);

        var events = await EventsAsync(http, job.Id);
        Assert.Contains(events, e => e!["message"]!.GetValue<string>().Contains("runs as 2 data-parallel ranks on CPU ranks", StringComparison.Ordinal));
        Assert.DoesNotContain(events, e => e!["level"]!.GetValue<string>() == "warning");
        // Rank 0 alone reports progress: one event per step.
        Assert.Equal(2, Losses(events).Count);
        Assert.Contains("rank 0 of 2", log);
        Assert.Contains("rank 1: rank 1 of 2", log);
    }

    /// <summary>examples/configs/train.toml as written, but for the tiny model and a tiny run (each change checked to apply).</summary>
    static TrainingConfig SpecToml(int gradientAccumulation, int gpuCount)
    {
        var text = File.ReadAllText(Path.Combine(NodeReference.RepoRoot, "examples", "configs", "train.toml"));
        foreach (var (from, to) in new[]
                 {
                     ("n_epochs = 2", "n_epochs = 1"),
                     ("gradient_accumulation_steps = 64", $"gradient_accumulation_steps = {gradientAccumulation}"),
                     ("gpu_count = 4", $"gpu_count = {gpuCount}"),
                 })
        {
            Assert.Contains(from, text);
            text = text.Replace(from, to, StringComparison.Ordinal);
        }
        var (config, errors) = TrainingConfigLoader.Parse(text, "train.toml", modelOverride: "anneal/tiny-qwen3");
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        return config!;
    }

    static JsonObject Request(TrainingConfig config, string fileId) => new()
    {
        ["model"] = config.Model,
        ["training_file_id"] = fileId,
        ["hyperparameters"] = config.Hyperparameters.DeepClone(),
        ["metadata"] = new JsonObject { ["effective_config"] = config.EffectiveConfig.DeepClone() },
    };

    // 16 examples, per_device_batch 2: 4 ranks take one micro-batch each per step, 2 steps in the epoch;
    // one process takes the same 8 rows as 4 accumulated micro-batches per step.
    [MpiFact]
    public async Task The_spec_toml_asking_for_four_devices_runs_as_four_cpu_ranks_like_one_process()
    {
        var (server, http) = await StartAsync();
        await using var _ = server;
        using var __ = http;
        var fileId = await UploadAsync(http, TinyFixture.WriteChatSet(dir, repeat: 2));

        var clock = Stopwatch.StartNew();
        var ranks = SpecToml(gradientAccumulation: 1, gpuCount: 4);
        Assert.Equal(4, ranks.EffectiveConfig["compute"]!["gpu_count"]!.GetValue<long>());
        var job = await WaitAsync(http, await StartJobAsync(http, Request(ranks, fileId)), TimeSpan.FromSeconds(240));
        var log = await http.GetStringAsync($"learning/jobs/{job.Id}/logs");
        output.WriteLine($"4 ranks: {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(job.Status == JobStatus.Succeeded, $"{job.Status}: {job.Error?.Message}\n{log}");
        var events = await EventsAsync(http, job.Id);
        Assert.Contains(events, e => e!["message"]!.GetValue<string>().Contains("runs as 4 data-parallel ranks on CPU ranks", StringComparison.Ordinal));
        for (var r = 1; r < 4; r++) Assert.Contains($"rank {r}: rank {r} of 4", log);
        Assert.Contains("optimizer state sharded (ZeRO-1)", log);

        clock.Restart();
        var single = SpecToml(gradientAccumulation: 4, gpuCount: 1);
        var one = await WaitAsync(http, await StartJobAsync(http, Request(single, fileId)), TimeSpan.FromSeconds(120));
        output.WriteLine($"1 process: {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(one.Status == JobStatus.Succeeded, $"{one.Status}: {one.Error?.Message}");
        var oneEvents = await EventsAsync(http, one.Id);
        Assert.DoesNotContain(oneEvents, e => e!["message"]!.GetValue<string>().Contains("data-parallel ranks", StringComparison.Ordinal));

        var expected = Losses(oneEvents);
        var losses = Losses(events);
        output.WriteLine($"1 process: {string.Join(" ", expected)}\n4 ranks:   {string.Join(" ", losses)}");
        Assert.Equal(2, expected.Count);
        Assert.Equal(expected.Count, losses.Count);
        for (var i = 0; i < expected.Count; i++) Assert.Equal(expected[i], losses[i], 1e-5);
    }

    // A rank that dies (SIGKILL, so it says nothing itself) fails the job promptly, and the job's
    // error names the rank.
    [MpiFact]
    public async Task A_job_whose_rank_dies_fails_naming_that_rank()
    {
        var (server, http) = await StartAsync();
        await using var _ = server;
        using var __ = http;
        var fileId = await UploadAsync(http, TinyFixture.WriteChatSet(dir));
        var job = await StartJobAsync(http, new JsonObject
        {
            ["model"] = "anneal/tiny-qwen3",
            ["training_file_id"] = fileId,
            ["hyperparameters"] = new JsonObject { ["total_steps"] = 100_000, ["per_device_batch"] = 2, ["save_steps"] = 100_000 },
            ["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_count"] = 2 } } },
        });
        int? victim = null;
        for (var deadline = DateTime.UtcNow.AddSeconds(120); DateTime.UtcNow < deadline && victim is null;)
        {
            await Task.Delay(300);
            var log = await http.GetStringAsync($"learning/jobs/{job.Id}/logs");
            if (Losses(await EventsAsync(http, job.Id)).Count > 0 && RankOnePid().Match(log) is { Success: true } m) victim = int.Parse(m.Groups[1].Value);
        }
        Assert.True(victim is not null, "no training step within 120 s");
        var clock = Stopwatch.StartNew();
        Process.GetProcessById(victim!.Value).Kill();   // SIGKILL
        job = await WaitAsync(http, job, TimeSpan.FromSeconds(60));
        output.WriteLine($"{job.Status} {clock.Elapsed.TotalSeconds:F1} s after rank 1 was killed: {job.Error?.Code}: {job.Error?.Message}\n{string.Join("\n", job.Error?.LogTail ?? [])}");
        Assert.Equal(JobStatus.Failed, job.Status);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"the job ended {clock.Elapsed.TotalSeconds:F0} s after its rank died");
        Assert.StartsWith("rank 1 was killed by signal 9 (Killed)", job.Error!.Message);
        Assert.Equal(ErrorCodes.TrainerCrashed, job.Error.Code);
    }

    [GeneratedRegex(@"rank 1: rank 1 of 2 \(local rank 1, pid (\d+)\)")]
    private static partial Regex RankOnePid();
}
