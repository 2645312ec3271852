// `anneal worker` with the real trainer against a server whose files live in an S3-compatible
// bucket (`--object-store`, s3rver here): the server's data folder has lost the dataset by the
// time the worker claims the job, so the worker's download is fetched from the bucket first; the
// checkpoint and final model the worker uploads are in the bucket before the job is `succeeded`,
// and the server exports the model from the bucket after losing the job's folder too.
using System.Formats.Tar;
using System.Net.Http.Headers;
using Anneal.Core.Contracts;
using Anneal.Server.Tests.Stores;

namespace Anneal.Cli.Tests.Worker;

[Collection("trainer")]
public class WorkerObjectStoreTests
{
    const string Token = WorkerBed.Token;

    [S3Fact]
    public async Task A_worker_trains_from_the_bucket_and_its_outputs_land_there()
    {
        var bucket = TestS3.Shared.NewBucket();
        await using var bed = await WorkerBed.StartAsync(o => o with { ObjectStore = bucket });
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("train.toml", $"""
            [job]
            model = "{Samples.TinyModel}"

            [hyperparameters]
            total_steps = 2
            save_steps = 1
            per_device_batch = 1
            learning_rate = 1e-3
            sequence_length = 32
            """);
        box.Write("data.jsonl", Samples.Dataset(4));
        var jobId = await bed.SubmitAsync();
        foreach (var cached in Directory.GetFiles(Path.Combine(dataDir, "files"))) File.Delete(cached);

        var worker = await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", Path.Combine(box.Dir, "worker"), "--offline", "--exit-when-idle");
        Assert.True(worker.ExitCode == 0, worker.ToString());
        Assert.Contains($"worker: job {jobId} attempt 1: exit 0; the job is succeeded", worker.Out);

        var output = $"jobs/{jobId}/output";
        Assert.NotNull(await TestS3.Shared.GetAsync(bucket, $"{output}/final.manifest.json"));
        Assert.NotNull(await TestS3.Shared.GetAsync(bucket, $"{output}/final/config.json"));
        Assert.NotNull(await TestS3.Shared.GetAsync(bucket, $"{output}/checkpoints/step-1.manifest.json"));

        Directory.Delete(Path.Combine(dataDir, "jobs", jobId), recursive: true);
        using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);
        var model = Uri.EscapeDataString($"fft:{Samples.TinyModel}:{jobId}");
        var export = await http.GetAsync($"learning/model-export?model={model}&format=merged");
        Assert.True(export.IsSuccessStatusCode, await export.Content.ReadAsStringAsync());
        var names = new List<string>();
        using (var tar = new TarReader(await export.Content.ReadAsStreamAsync()))
            while (await tar.GetNextEntryAsync() is { } entry) names.Add(entry.Name);
        Assert.Contains("config.json", names);
        Assert.Contains(names, n => n.EndsWith(".safetensors", StringComparison.Ordinal));
    }
}
