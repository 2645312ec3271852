// 50 parallel uploads and 50 parallel job creations: nothing lost, nothing corrupted, no duplicate.
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Anneal.Core.Contracts;

namespace Anneal.Server.Tests;

public class ConcurrencyTests
{
    [Fact]
    public async Task Fifty_parallel_uploads_and_job_creations_are_all_stored_intact()
    {
        await using var t = await TestServer.StartAsync();
        var datasets = Enumerable.Range(1, 50).Select(i => TestServer.Dataset(i % 7 + 1).Concat(TestServer.Dataset(1)).Concat(System.Text.Encoding.UTF8.GetBytes($"{{\"messages\":[{{\"role\":\"user\",\"content\":\"n{i}\"}},{{\"role\":\"assistant\",\"content\":\"ok\"}}]}}\n")).ToArray()).ToList();
        var duplicate = TestServer.Dataset(9);
        var seed = await t.UploadReadyAsync(TestServer.Dataset(2));

        // 50 distinct uploads, 10 uploads of one identical dataset, 50 job creations — all at once.
        var uploadTasks = datasets.Select(d => t.UploadAsync(d)).ToList();
        var dupeTasks = Enumerable.Range(0, 10).Select(_ => t.UploadAsync(duplicate)).ToList();
        var creationTasks = Enumerable.Range(0, 50).Select(_ => t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(seed.Id)))).ToList();
        var all3 = await Task.WhenAll(uploadTasks.Concat(dupeTasks).Concat(creationTasks));
        var uploads = all3[..50];
        var dupes = all3[50..60];
        var creations = all3[60..];

        var files = new List<FileObject>();
        foreach (var (u, i) in uploads.Select((u, i) => (u, i)))
        {
            Assert.Equal(HttpStatusCode.Created, u.StatusCode);
            var f = (await u.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(datasets[i])), f.Sha256);
            files.Add(f);
        }
        Assert.Equal(50, files.Select(f => f.Id).Distinct().Count());
        var dupeIds = new List<string>();
        foreach (var d in dupes) dupeIds.Add((await d.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!.Id);
        Assert.Single(dupeIds.Distinct());
        Assert.Single(dupes, d => d.StatusCode == HttpStatusCode.Created);

        var jobIds = new List<string>();
        foreach (var c in creations)
        {
            Assert.Equal(HttpStatusCode.Created, c.StatusCode);
            jobIds.Add((await c.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!.Id);
        }
        Assert.Equal(50, jobIds.Distinct().Count());

        // Every stored file: bytes on disk match the hash, and validation finished for each.
        foreach (var f in files)
        {
            var stored = await t.WaitFileAsync(f.Id);
            Assert.Equal(FileStatus.Ready, stored.Status);
            var blob = await File.ReadAllBytesAsync(Path.Combine(t.DataDir, "files", f.Sha256));
            Assert.Equal(f.Sha256, Convert.ToHexStringLower(SHA256.HashData(blob)));
            Assert.Equal(f.Bytes, blob.Length);
        }
        Assert.Equal(52, Directory.GetFiles(Path.Combine(t.DataDir, "files")).Length);
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "tmp")));

        var all = new List<JobObject>();
        string? after = null;
        do
        {
            var page = (await t.Http.GetFromJsonAsync<JobList>($"learning/jobs?limit=100{(after is null ? "" : "&after=" + after)}", AnnealJson.Options))!;
            all.AddRange(page.Jobs);
            after = page.HasMore ? page.Jobs[^1].Id : null;
        } while (after is not null);
        Assert.Equal(jobIds.OrderBy(x => x), all.Select(j => j.Id).OrderBy(x => x));
        foreach (var id in jobIds)
            Assert.Equal([1L], (await t.EventsAsync(id)).Select(e => e.Seq));
    }
}
