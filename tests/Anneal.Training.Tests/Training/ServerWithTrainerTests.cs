// A real server (Kestrel on loopback, SQLite) running the real trainer process on the tiny model:
// a job whose data does not fit fails with the trainer's user_data_error naming the file the user
// uploaded (never the server's blob path), said once, and its log (GET …/logs) and error.log_tail
// tell the story of the run.
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class ServerWithTrainerTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-server-trainer-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static string Record(string user, string assistant) => new JsonObject
    {
        ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = user },
            new JsonObject { ["role"] = "assistant", ["content"] = assistant }),
    }.ToJsonString();

    [Fact]
    public async Task A_job_whose_data_does_not_fit_fails_naming_the_upload_with_a_useful_log()
    {
        await using var server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0",
            DataDir = Path.Combine(dir, "data"),
            TrainerCommand = TrainerEntryPoint.Command(),
            AllowModelDownload = false,
            CancelGracePeriod = TimeSpan.FromSeconds(10),
        });
        using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);

        // 1 short example, 2 whose prompt alone is longer than sequence_length 128: 2 of 3 dropped.
        var longPrompt = string.Join(" ", Enumerable.Repeat("a long prompt that never ends", 40));
        var lines = new[] { Record("Hi?", "Hello."), Record(longPrompt, "Yes."), Record(longPrompt + "!", "No.") };
        var form = new MultipartFormDataContent();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        form.Add(content, "file", "mydata.jsonl");
        form.Add(new StringContent("fine-tune"), "purpose");
        var upload = await http.PostAsync("learning/files", form);
        Assert.True(upload.IsSuccessStatusCode, await upload.Content.ReadAsStringAsync());
        var file = (await upload.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
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
            ["hyperparameters"] = new JsonObject { ["total_steps"] = 1, ["sequence_length"] = 128 },
        }));
        Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
        var job = (await create.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.True((await http.PostAsync($"learning/jobs/{job.Id}/start", null)).IsSuccessStatusCode);
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (!JobStatus.IsTerminal(job.Status) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
            job = (await http.GetFromJsonAsync<JobObject>($"learning/jobs/{job.Id}", AnnealJson.Options))!;
        }

        Assert.Equal(JobStatus.Failed, job.Status);
        var error = job.Error!;
        Assert.Equal(ErrorCodes.UserDataError, error.Code);
        Assert.StartsWith($"training file mydata.jsonl ({file.Id}): 2 of 3 examples have no assistant tokens within sequence_length 128", error.Message);
        Assert.DoesNotContain(Path.Combine(dir, "data"), error.Message);
        Assert.DoesNotContain(file.Sha256, error.Message);

        // The log and its tail: the trainer's own lines, then the server's verdict.
        Assert.Contains(error.LogTail!, l => l.Contains("sft.model.loading"));
        Assert.Contains(error.LogTail!, l => l.Contains("sft.failed [error] training file mydata.jsonl"));
        Assert.EndsWith($"server: Training failed: user_data_error: {error.Message}", error.LogTail![^1]);
        var log = await http.GetStringAsync($"learning/jobs/{job.Id}/logs");
        Assert.Contains("sft.model.loading", log);
        Assert.Contains($"training file mydata.jsonl ({file.Id})", log);

        // The message is said once: the event is a headline, the details are in data.error.
        var events = (await http.GetFromJsonAsync<EventList>($"learning/jobs/{job.Id}/events?limit=100", AnnealJson.Options))!.Events;
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Equal("Training failed", failed.Message);
        Assert.Equal(error.Message, failed.Data!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Jobs_on_the_same_upload_share_one_token_cache_and_the_file_learns_its_num_tokens()
    {
        await using var server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0",
            DataDir = Path.Combine(dir, "data"),
            TrainerCommand = TrainerEntryPoint.Command(),
            AllowModelDownload = false,
            CancelGracePeriod = TimeSpan.FromSeconds(10),
        });
        using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.FirstApiKey);

        var form = new MultipartFormDataContent();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(string.Join("\n", TinyFixture.Facts.Select(f => Record(f.Question, f.Answer))) + "\n"));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        form.Add(content, "file", "facts.jsonl");
        form.Add(new StringContent("fine-tune"), "purpose");
        var upload = await http.PostAsync("learning/files", form);
        Assert.True(upload.IsSuccessStatusCode, await upload.Content.ReadAsStringAsync());
        var file = (await upload.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
        for (var i = 0; i < 200 && file.Status == FileStatus.Processing; i++)
        {
            await Task.Delay(50);
            file = (await http.GetFromJsonAsync<FileObject>($"learning/files/{file.Id}", AnnealJson.Options))!;
        }
        Assert.Equal(FileStatus.Ready, file.Status);

        async Task<JsonObject> Train(int seed)
        {
            var create = await http.PostAsync("learning/jobs", JsonContent.Create(new JsonObject
            {
                ["model"] = "anneal/tiny-qwen3",
                ["training_file_id"] = file.Id,
                ["hyperparameters"] = new JsonObject { ["total_steps"] = 1, ["sequence_length"] = 128, ["seed"] = seed },
            }));
            Assert.True(create.IsSuccessStatusCode, await create.Content.ReadAsStringAsync());
            var job = (await create.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
            Assert.True((await http.PostAsync($"learning/jobs/{job.Id}/start", null)).IsSuccessStatusCode);
            var deadline = DateTime.UtcNow.AddSeconds(120);
            while (!JobStatus.IsTerminal(job.Status) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
                job = (await http.GetFromJsonAsync<JobObject>($"learning/jobs/{job.Id}", AnnealJson.Options))!;
            }
            Assert.True(job.Status == JobStatus.Succeeded, job.Error?.Message);
            var events = (await http.GetFromJsonAsync<EventList>($"learning/jobs/{job.Id}/events?limit=100", AnnealJson.Options))!.Events;
            return Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;
        }

        var first = await Train(1);
        var second = await Train(2);
        Assert.False(first["cache"]!["used"]!.GetValue<bool>());
        Assert.True(second["cache"]!["used"]!.GetValue<bool>());
        Assert.Single(Directory.GetFiles(Path.Combine(dir, "data", "token-cache")));
        file = (await http.GetFromJsonAsync<FileObject>($"learning/files/{file.Id}", AnnealJson.Options))!;
        Assert.Equal(first["file_tokens"]!.GetValue<long>(), file.NumTokens);
        Assert.True(file.NumTokens > 8 * 10, $"num_tokens {file.NumTokens}");
    }
}
