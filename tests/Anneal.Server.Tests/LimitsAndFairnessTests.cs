// Resource limits and fairness under load: job metadata has a size limit and list pages a byte
// budget; idle event streams do not poll; one organisation's uploads do not hold another's tiny
// file back; events name paths relative to the job, never the server's folders.
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;

namespace Anneal.Server.Tests;

public class LimitsAndFairnessTests
{
    static JsonObject BodyWithMetadata(string fileId, int bytes)
    {
        var body = (JsonObject)TestServer.JobBody(fileId);
        body["metadata"] = new JsonObject { ["note"] = new string('m', bytes) };
        return body;
    }

    [Fact]
    public async Task Job_metadata_has_a_size_limit_and_a_list_page_stays_within_its_byte_budget()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var tooBig = await t.Http.PostAsync("learning/jobs", TestServer.Json(BodyWithMetadata(file.Id, 70_000)));
        var problem = await TestServer.ProblemAsync(tooBig, HttpStatusCode.UnprocessableEntity);
        Assert.Equal("metadata", problem["errors"]![0]!["field"]!.GetValue<string>());

        for (var i = 0; i < 80; i++)
            Assert.Equal(HttpStatusCode.Created, (await t.Http.PostAsync("learning/jobs", TestServer.Json(BodyWithMetadata(file.Id, 60_000)))).StatusCode);
        var response = await t.Http.GetAsync("learning/jobs?limit=100");
        var text = await response.Content.ReadAsStringAsync();
        var page = JsonNode.Parse(text)!;
        Assert.True(text.Length < 4_300_000, $"{text.Length} bytes in one page");
        Assert.True(page["has_more"]!.GetValue<bool>());
        var count = page["jobs"]!.AsArray().Count;
        Assert.InRange(count, 1, 79);
        // The next page continues where the byte budget stopped the first one.
        var last = page["jobs"]![count - 1]!["id"]!.GetValue<string>();
        var rest = JsonNode.Parse(await t.Http.GetStringAsync($"learning/jobs?limit=100&after={last}"))!["jobs"]!.AsArray().Count;
        Assert.Equal(80, count + rest);
    }

    [Fact]
    public async Task Idle_event_streams_wait_for_events_instead_of_polling_and_still_get_them_at_once()
    {
        await using var t = await TestServer.StartAsync();
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        var streams = new List<(HttpResponseMessage Response, StreamReader Reader)>();
        for (var i = 0; i < 20; i++)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, $"learning/jobs/{job.Id}/events");
            request.Headers.Accept.ParseAdd("text/event-stream");
            var response = await t.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            streams.Add((response, new StreamReader(await response.Content.ReadAsStreamAsync())));
        }
        // Each stream first sends sft.created; then nothing for as long as nothing happens.
        var pending = new List<Task<string?>>();
        foreach (var (_, reader) in streams)
        {
            Assert.Equal("id: 1", await reader.ReadLineAsync());
            while (await reader.ReadLineAsync() is { Length: > 0 }) { }
            pending.Add(reader.ReadLineAsync());
        }
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        // Before: a keep-alive every second per stream, each after a database query.
        Assert.All(pending, p => Assert.False(p.IsCompleted, $"an idle stream sent '{(p.IsCompleted ? p.Result : "")}'"));

        var clock = Stopwatch.StartNew();
        await t.StartJobAsync(job.Id);
        for (var i = 0; i < streams.Count; i++)
        {
            var (response, reader) = streams[i];
            var line = await pending[i];
            while (line is not null && !line.StartsWith("event: ")) line = await reader.ReadLineAsync();
            Assert.Equal($"event: {EventTypes.Queued}", line);
            response.Dispose();
        }
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"events reached the streams after {clock.Elapsed}");
    }

    [Fact]
    public async Task A_tiny_file_of_one_organisation_is_validated_before_a_backlog_of_another_organisations_uploads()
    {
        await using var t = await TestServer.StartAsync();
        var big = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat(TestServer.GoodLine + "\n", 40_000)));
        // The backlog arrives at once (on a fast machine, files uploaded one after another are each
        // validated before the next arrives, and there is no backlog to jump).
        var backlog = (await Task.WhenAll(Enumerable.Range(0, 8).Select(async i =>
        {
            var bytes = big.Concat(Encoding.UTF8.GetBytes(TestServer.GoodLine.Replace("2+2", $"{i}+{i}") + "\n")).ToArray();
            var response = await t.UploadAsync(bytes);
            return (await response.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
        }))).ToList();
        using var acme = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var tiny = await t.UploadReadyAsync(TestServer.Dataset(1), acme);
        Assert.Equal(FileStatus.Ready, tiny.Status);
        // How many backlog files were still waiting depends on how fast this machine validates
        // (none, on a fast one); the order itself is checked below, without timing.
        foreach (var f in backlog) Assert.Equal(FileStatus.Ready, (await t.WaitFileAsync(f.Id)).Status);
    }

    [Fact]
    public void Validation_takes_organisations_in_turn_first_come_first_served_within_one()
    {
        var turns = new Anneal.Server.Files.FileProcessingWorker.FairTurns();
        for (var i = 1; i <= 4; i++) turns.Add("big", $"big{i}");
        Assert.Equal("big1", turns.Next());          // the worker is busy with it when the others arrive
        turns.Add("acme", "tiny");
        turns.Add("third", "t1");
        turns.Add("acme", "tiny2");
        string[] order = [.. Enumerable.Range(0, 6).Select(_ => turns.Next()!)];
        Assert.Equal(["big2", "tiny", "t1", "big3", "tiny2", "big4"], order);
        Assert.True(turns.IsEmpty);
        Assert.Null(turns.Next());
    }

    [Fact]
    public async Task Events_name_paths_relative_to_the_job_never_the_servers_folders()
    {
        await using var t = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.Succeeds) });
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Succeeded);
        var events = await t.EventsAsync(job.Id);
        var saved = events.Single(e => e.Type == EventTypes.CheckpointSaved);
        Assert.Equal(Path.Combine("output", "checkpoints", "step-1"), saved.Data!["path"]!.GetValue<string>());
        Assert.Equal(Path.Combine("output", "final"), events[^1].Data!["final_path"]!.GetValue<string>());
        var raw = await t.Http.GetStringAsync($"learning/jobs/{job.Id}/events?limit=1000");
        Assert.DoesNotContain(t.DataDir, raw);
        // The checkpoint is still usable: its id works as a model for a new job.
        var checkpoints = await t.Http.GetStringAsync($"learning/jobs/{job.Id}/checkpoints");
        Assert.Contains("step-1", checkpoints);
    }
}
