// A worker whose host has no copy of a job's base model fetches it from the server: here a job
// continues from a model fine-tuned by an earlier job (an fft: id, which only the server holds),
// on a worker with an empty folder and no Hub. The model arrives file by file, each checked
// against the sha256 the server listed, into the worker's cache; a broken transfer resumes
// where it stopped. When the server has lost the
// model's files too, the job fails with the server's reason.
using Anneal.Cli.Tests.EndToEnd;
using Anneal.Cli.Worker;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.Worker;

[Collection("trainer")]
public class WorkerBaseModelTests
{
    const string Token = WorkerBed.Token;

    [Fact]
    public async Task A_worker_without_the_base_model_fetches_a_fine_tuned_one_from_the_server_and_trains_on_it()
    {
        await using var bed = await WorkerBed.StartAsync();
        var (server, box, dataDir) = (bed.Server, bed.Box, bed.DataDir);
        box.Write("data.jsonl", Samples.Dataset(6));
        async Task<string> Submit(string model, int steps = 2)
        {
            box.Write("train.toml", $"""
                [job]
                model = "{model}"

                [hyperparameters]
                total_steps = {steps}
                per_device_batch = 1
                learning_rate = 1e-3
                sequence_length = 32
                """);
            return await bed.SubmitAsync();
        }
        async Task<CliResult> Work(string folder) =>
            await box.RunAsync("worker", "--server", server.BaseUrl, "--token", Token, "--work-dir", Path.Combine(box.Dir, folder), "--offline", "--exit-when-idle");

        var first = await Submit(Samples.TinyModel);
        var ran = await Work("worker-1");
        Assert.True(ran.ExitCode == 0 && ran.Out.Contains($"job {first} attempt 1: exit 0"), ran.ToString());
        var fineTuned = $"fft:{Samples.TinyModel}:{first}";

        // A second host, empty: the base model can only come from the server.
        var second = await Submit(fineTuned);
        var worker2 = Path.Combine(box.Dir, "worker-2");
        ran = await Work("worker-2");
        Assert.True(ran.ExitCode == 0 && ran.Out.Contains($"job {second} attempt 1: exit 0; the job is succeeded"), ran.ToString());
        var fetched = Assert.Single(Directory.GetDirectories(Path.Combine(worker2, "server-models")));
        var final = Path.Combine(dataDir, "jobs", first, "output", "final");
        foreach (var name in new[] { "config.json", "model.safetensors", "tokenizer.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(final, name)), File.ReadAllBytes(Path.Combine(fetched, name)));
        Assert.Empty(Directory.GetDirectories(Path.Combine(worker2, "server-models"), "*.partial"));

        // A broken transfer resumes: what arrived is kept and only the rest is asked for (a Range
        // request), so a damaged prefix shows up as a sha256 mismatch rather than being fetched again.
        using (var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/workers/") })
        {
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token);
            var transfers = new WorkerTransfers(http, TextWriter.Null, new TransferSettings());
            var weights = File.ReadAllBytes(Path.Combine(fetched, "model.safetensors"));
            Directory.Move(fetched, fetched + ".partial");
            File.WriteAllBytes(Path.Combine(fetched + ".partial", "model.safetensors"), weights[..(weights.Length / 2)]);
            var (resumed, _) = await ServerModelCache.FetchAsync(http, transfers, second, worker2, default);
            Assert.Equal(fetched, resumed);
            Assert.Equal(weights, File.ReadAllBytes(Path.Combine(fetched, "model.safetensors")));

            Directory.Move(fetched, fetched + ".partial");
            var damaged = weights[..(weights.Length / 2)];
            damaged[0] ^= 0xff;
            File.WriteAllBytes(Path.Combine(fetched + ".partial", "model.safetensors"), damaged);
            var refused = await Assert.ThrowsAnyAsync<Exception>(() => ServerModelCache.FetchAsync(http, transfers, second, worker2, default));
            Assert.Contains("model.safetensors: the downloaded bytes have sha256", refused.Message);
            Assert.False(File.Exists(Path.Combine(fetched + ".partial", "model.safetensors")), "the damaged file was kept");
            var (again, _) = await ServerModelCache.FetchAsync(http, transfers, second, worker2, default);
            Assert.Equal(weights, File.ReadAllBytes(Path.Combine(again!, "model.safetensors")));
        }

        // The server lost the model's files: the next job on it fails with the server's reason.
        Directory.Delete(final, recursive: true);
        var third = await Submit(fineTuned, steps: 3);   // another request: the same one would answer the second job again
        ran = await Work("worker-3");
        using var client = new Anneal.Cli.Http.AnnealClient(server.BaseUrl + "/api", server.FirstApiKey!);
        var job = await client.GetJobAsync(third, default);
        Assert.True(ran.Out.Contains($"job {third} attempt 1"), $"{ran}\n{job}");
        Assert.Equal(JobStatus.Failed, job.Status);
        Assert.Contains($"The server has no copy of '{fineTuned}'", job.Error?.Message);
    }
}
