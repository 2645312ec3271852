// The cross-organisation matrix: for every endpoint that takes an id, another organisation's id
// gets exactly the answer a made-up id gets (status and words), so nothing says it exists; lists
// never show it; and the owner's resources are untouched afterwards.
using System.Net;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Xunit.Abstractions;

namespace Anneal.Server.Tests;

public class IsolationMatrixTests(ITestOutputHelper output)
{
    static async Task<(HttpStatusCode Status, string Detail)> Answer(HttpResponseMessage response, params string[] ids)
    {
        var text = await response.Content.ReadAsStringAsync();
        var detail = text;
        try { detail = JsonNode.Parse(text)?["detail"]?.GetValue<string>() ?? text; } catch (System.Text.Json.JsonException) { }
        foreach (var id in ids) detail = detail.Replace(id, "ID", StringComparison.Ordinal);
        return (response.StatusCode, detail);
    }

    [Fact]
    public async Task Another_organisations_ids_are_answered_like_ids_that_do_not_exist_on_every_endpoint()
    {
        await using var t = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.Succeeds) });
        // Organisation "default" (t.Http): a file, a finished job with a checkpoint and a fine-tuned model.
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(job.Id);
        var done = await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Succeeded);
        var checkpoint = JsonNode.Parse(await t.Http.GetStringAsync($"learning/jobs/{job.Id}/checkpoints"))!;
        var checkpointId = (checkpoint["data"] ?? checkpoint["checkpoints"])![0]!["id"]!.GetValue<string>();
        var keyId = JsonNode.Parse(await t.Http.GetStringAsync("keys"))!["data"]![0]!["id"]!.GetValue<string>();
        var owned = new[] { file.Id, job.Id, done.FineTunedModel!, checkpointId, keyId };

        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var fakeFile = "file_aaaaaaaaaaaaaaaaaaaaaaaa";
        var fakeJob = "job_aaaaaaaaaaaaaaaaaaaaaaaa";
        var fakeKey = "key_aaaaaaaaaaaaaaaaaaaaaaaa";
        var fakeModel = $"fft:anneal/tiny-qwen3:{fakeJob}";
        // (method, path template, body template); {f} file, {j} job, {k} key, {m} model id.
        var matrix = new (HttpMethod Method, string Path, string? Body)[]
        {
            (HttpMethod.Get, "learning/files/{f}", null), (HttpMethod.Get, "files/{f}", null),
            (HttpMethod.Delete, "learning/files/{f}", null), (HttpMethod.Delete, "files/{f}", null),
            (HttpMethod.Get, "learning/files?after={f}", null), (HttpMethod.Get, "files?after={f}", null),
            (HttpMethod.Get, "learning/jobs/{j}", null), (HttpMethod.Get, "learning/jobs?after={j}", null),
            (HttpMethod.Post, "learning/jobs/{j}/start", null), (HttpMethod.Post, "learning/jobs/{j}/cancel", null),
            (HttpMethod.Post, "learning/jobs/{j}/pause", null), (HttpMethod.Post, "learning/jobs/{j}/resume", null),
            (HttpMethod.Get, "learning/jobs/{j}/logs", null), (HttpMethod.Get, "learning/jobs/{j}/events", null),
            (HttpMethod.Get, "learning/jobs/{j}/metrics", null), (HttpMethod.Get, "learning/jobs/{j}/checkpoints", null),
            (HttpMethod.Delete, "keys/{k}", null),
            (HttpMethod.Post, "learning/jobs", """{"model": "anneal/tiny-qwen3", "training_file_id": "{f}", "hyperparameters": {"n_epochs": 1}}"""),
            (HttpMethod.Post, "learning/jobs", """{"model": "anneal/tiny-qwen3", "training_file_id": "{f}", "validation_file_id": "{f}", "hyperparameters": {"n_epochs": 1}}"""),
            (HttpMethod.Post, "learning/jobs", """{"model": "{m}", "training_file_id": "{f}", "hyperparameters": {"n_epochs": 1}}"""),
            (HttpMethod.Post, "learning/jobs", """{"model": "{c}", "training_file_id": "{f}", "hyperparameters": {"n_epochs": 1}}"""),
        };
        string Fill(string s, bool real) => s.Replace("{f}", real ? file.Id : fakeFile).Replace("{j}", real ? job.Id : fakeJob)
            .Replace("{k}", real ? keyId : fakeKey).Replace("{m}", real ? done.FineTunedModel! : fakeModel).Replace("{c}", real ? checkpointId : fakeModel + ":step-1");
        HttpRequestMessage Request((HttpMethod Method, string Path, string? Body) row, bool real) =>
            new(row.Method, Fill(row.Path, real)) { Content = row.Body is null ? null : new StringContent(Fill(row.Body, real), System.Text.Encoding.UTF8, "application/json") };

        foreach (var row in matrix)
        {
            var theirs = await Answer(await other.SendAsync(Request(row, real: true)), [.. owned, fakeFile, fakeJob, fakeKey, fakeModel + ":step-1", fakeModel]);
            var madeUp = await Answer(await other.SendAsync(Request(row, real: false)), [.. owned, fakeFile, fakeJob, fakeKey, fakeModel + ":step-1", fakeModel]);
            Assert.True(madeUp == theirs, $"{row.Method} {row.Path}: another organisation's id answers {theirs}, a made-up one {madeUp}");
            Assert.True((int)theirs.Status is 400 or 404 or 422, $"{row.Method} {row.Path}: {theirs}");
        }
        output.WriteLine($"{matrix.Length} endpoint/id combinations answered alike for another organisation's ids and made-up ones");

        // Lists of the other organisation show nothing of this one.
        foreach (var list in new[] { "learning/files", "files", "learning/jobs", "learning/models", "keys" })
        {
            var text = await other.GetStringAsync(list);
            foreach (var id in owned) Assert.DoesNotContain(id, text);
        }
        // And nothing it tried changed anything here.
        Assert.Equal(FileStatus.Ready, (await t.WaitFileAsync(file.Id)).Status);
        Assert.Equal(JobStatus.Succeeded, (await t.GetJobAsync(job.Id)).Status);
        Assert.Equal(HttpStatusCode.OK, (await t.Http.GetAsync("learning/jobs")).StatusCode);
    }
}
