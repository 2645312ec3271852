// The durability suite: `anneal serve` in a child process is SIGKILLed at random points (fixed
// seeds, so a failure reproduces) while concurrent clients upload, create, start and delete; then
// every acknowledged write is checked (row, bytes, sha256), no job is left `running`, no trainer is
// left behind, SQLite's integrity check passes and tmp/ is empty (on PostgreSQL: running jobs are
// recovered once their lease lapses, and young tmp/ entries are kept for other servers). And the
// trainer-orphan case: a trainer whose server is killed stops by itself after a checkpoint, and the
// job resumes from it.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;
using Xunit.Abstractions;

namespace Anneal.Cli.Tests.EndToEnd;

[Collection("trainer")]
public class CrashDurabilityTests(ITestOutputHelper output)
{
    sealed class Ledger
    {
        public ConcurrentDictionary<string, string> Uploaded { get; } = new();   // file id → sha256
        public ConcurrentDictionary<string, bool> Deleted { get; } = new();
        // Deletes sent but not answered: they may or may not have happened.
        public ConcurrentDictionary<string, bool> DeleteInFlight { get; } = new();
        public ConcurrentDictionary<string, string> Jobs { get; } = new();       // job id → file id
        public ConcurrentDictionary<string, bool> Started { get; } = new();
        public ConcurrentDictionary<string, bool> Refused { get; } = new();
        public int Acknowledged => Uploaded.Count + Deleted.Count + Jobs.Count + Started.Count;
    }

    static JsonObject JobBody(string fileId) => new()
    {
        ["model"] = Samples.TinyModel,
        ["training_type"] = "sft_offline",
        ["training_file_id"] = fileId,
        ["hyperparameters"] = new JsonObject { ["total_steps"] = 3, ["per_device_batch"] = 1, ["sequence_length"] = 32, ["learning_rate"] = 1e-3 },
    };

    /// <summary>One client until the server dies: random uploads, job creations, starts and deletes of its own resources.</summary>
    static async Task ClientAsync(HttpClient http, Random random, string tag, Ledger ledger)
    {
        var mine = new List<string>();
        var myJobs = new List<string>();
        var used = new HashSet<string>();
        for (var n = 0; ; n++)
        {
            try
            {
                var roll = random.Next(100);
                if (roll < 40 || mine.Count == 0)
                {
                    var lines = Enumerable.Range(0, random.Next(2, 8)).Select(i => Samples.Record(i).Replace("plus 1", $"plus 1 ({tag}-{n})"));
                    var bytes = Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n");
                    using var form = new MultipartFormDataContent { { new ByteArrayContent(bytes), "file", $"{tag}-{n}.jsonl" }, { new StringContent("fine-tune"), "purpose" } };
                    var response = await http.PostAsync("learning/files", form);
                    if (response.StatusCode is HttpStatusCode.Created or HttpStatusCode.OK)
                    {
                        var file = (await response.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
                        ledger.Uploaded[file.Id] = Convert.ToHexStringLower(SHA256.HashData(bytes));
                        mine.Add(file.Id);
                    }
                    else ledger.Refused.TryAdd($"upload {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}", true);
                }
                else if (roll < 65)
                {
                    var fileId = mine[random.Next(mine.Count)];
                    var response = await http.PostAsync("learning/jobs", JsonContent.Create(JobBody(fileId), options: AnnealJson.Options));
                    if (response.StatusCode == HttpStatusCode.Created)
                    {
                        var job = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
                        ledger.Jobs[job.Id] = fileId;
                        myJobs.Add(job.Id);
                        used.Add(fileId);
                    }
                }
                else if (roll < 80 && myJobs.Count > 0)
                {
                    var jobId = myJobs[random.Next(myJobs.Count)];
                    if ((await http.PostAsync($"learning/jobs/{jobId}/start", null)).StatusCode == HttpStatusCode.OK) ledger.Started[jobId] = true;
                }
                else
                {
                    var fileId = mine[random.Next(mine.Count)];
                    if (used.Contains(fileId)) continue;
                    ledger.DeleteInFlight[fileId] = true;
                    var answer = (await http.DeleteAsync($"learning/files/{fileId}")).StatusCode;
                    ledger.DeleteInFlight.TryRemove(fileId, out _);
                    if (answer == HttpStatusCode.OK)
                    {
                        ledger.Deleted[fileId] = true;
                        mine.Remove(fileId);
                    }
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
            {
                ledger.Refused.TryAdd("ended by " + e.GetType().Name + ": " + e.Message, true);
                return; // the server is gone: what was not acknowledged may or may not have happened
            }
        }
    }

    [Fact]
    public async Task Every_acknowledged_write_survives_repeated_sigkill_under_concurrent_clients()
    {
        const int Seed = 7, Rounds = 4, Clients = 8;
        var dataDir = Directory.CreateTempSubdirectory("anneal-crash-").FullName;
        var ledger = new Ledger();
        var random = new Random(Seed);
        string key = "";
        var strays = 0;
        for (var round = 0; round < Rounds; round++)
        {
            // On PostgreSQL a killed server's running jobs stay its own until their lease lapses: 10 s, not 30.
            using var serve = await ServeProcess.StartAsync(dataDir, more: TestStore.IsPostgres ? ["--lease-seconds", "10"] : []);
            if (serve.FirstKey is { } first) key = first;
            var clients = Enumerable.Range(0, Clients).Select(c =>
            {
                var http = serve.Client(key);
                var seed = random.Next();
                return Task.Run(async () =>
                {
                    using (http) await ClientAsync(http, new Random(seed), $"r{round}c{c}", ledger);
                });
            }).ToList();
            // Killed at a random point after a random number of acknowledged writes (a busy disk
            // makes writes slow, so a fixed delay could kill before any work was done).
            var target = ledger.Acknowledged + random.Next(5, 20);
            for (var wait = 0; wait < 300 && ledger.Acknowledged < target; wait++) await Task.Delay(100);
            await Task.Delay(random.Next(0, 300));
            serve.Crash();
            await Task.WhenAll(clients);
            if (!await ServeProcess.NoTrainersWithin(dataDir, TimeSpan.FromSeconds(30))) strays++;
        }
        Assert.Equal(0, strays);

        // A last start recovers; nothing runs jobs, so `running` can only be a job recovery missed.
        await using var server = await TestServer.StartAsync(dataDir: dataDir);
        using var http2 = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/") };
        http2.DefaultRequestHeaders.Authorization = new("Bearer", key);
        int survived = 0, lost = 0;
        var problems = new List<string>();
        foreach (var (id, sha) in ledger.Uploaded)
        {
            if (ledger.DeleteInFlight.ContainsKey(id)) continue; // unacknowledged either way
            var response = await http2.GetAsync($"learning/files/{id}");
            if (ledger.Deleted.ContainsKey(id))
            {
                if (response.StatusCode == HttpStatusCode.NotFound) survived++;
                else { lost++; problems.Add($"{id}: deleted (acknowledged) but answers {(int)response.StatusCode}"); }
                continue;
            }
            var blob = Path.Combine(dataDir, "files", sha);
            if (response.StatusCode == HttpStatusCode.OK && File.Exists(blob)
                && Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(blob))) == sha
                && (await response.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!.Sha256 == sha)
                survived++;
            else { lost++; problems.Add($"{id}: acknowledged upload answers {(int)response.StatusCode}, blob present {File.Exists(blob)}"); }
        }
        foreach (var (id, _) in ledger.Jobs)
        {
            var response = await http2.GetAsync($"learning/jobs/{id}");
            if (response.StatusCode != HttpStatusCode.OK) { lost++; problems.Add($"{id}: acknowledged job answers {(int)response.StatusCode}"); continue; }
            var job = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
            if (ledger.Started.ContainsKey(id) && job.Status == JobStatus.Created) { lost++; problems.Add($"{id}: acknowledged start lost"); }
            else survived++;
        }

        var (integrity, running) = CheckStore(dataDir);
        // A shared store's server recovers a job once its lease lapsed (checked every third of its own
        // 30 s lease): wait for that rather than assume the start did it, as it does on SQLite.
        for (var wait = 0; TestStore.IsPostgres && running > 0 && wait < 60; wait++)
        {
            await Task.Delay(1000);
            (integrity, running) = CheckStore(dataDir);
        }
        // tmp/ on a shared folder is swept only of entries older than StartupSweep.SharedGrace (another
        // server may be mid-upload): it stays as the crashes left it.
        var temp = TestStore.IsPostgres ? 0 : Directory.GetFileSystemEntries(Path.Combine(dataDir, "tmp")).Length;

        var summary = $"{Rounds} SIGKILLs, {Clients} clients, seed {Seed}: acknowledged {ledger.Acknowledged} " +
            $"({ledger.Uploaded.Count} uploads, {ledger.Deleted.Count} deletes, {ledger.Jobs.Count} jobs, {ledger.Started.Count} starts); " +
            $"checked {survived + lost}: survived {survived}, lost {lost}; running {running}; stray trainers {strays}; integrity {integrity}; tmp/ entries {temp}";
        output.WriteLine(summary);
        foreach (var r in ledger.Refused.Keys.Take(10)) output.WriteLine("  " + r);
        System.Console.Error.WriteLine(summary);
        Assert.True(lost == 0, summary + "\n" + string.Join("\n", problems));
        Assert.True(ledger.Uploaded.Count >= 10, summary); // the clients did get work done
        Assert.Equal("ok", integrity);
        Assert.Equal(0, running);
        Assert.Equal(0, temp);
    }

    /// <summary>
    /// SQLite's integrity check and the jobs left `running`. On PostgreSQL only the server was killed,
    /// never the database, so there is no file of the server's to check: "ok", and the count.
    /// </summary>
    static (string Integrity, long Running) CheckStore(string dataDir)
    {
        const string Running = "SELECT COUNT(*) FROM jobs WHERE status = 'running'";
        if (TestStore.IsPostgres)
        {
            using var pg = new NpgsqlConnection(DatabaseUrl.ToConnectionString(DatabaseUrl.Recorded(dataDir)!));
            pg.Open();
            using var count = new NpgsqlCommand(Running, pg);
            return ("ok", (long)count.ExecuteScalar()!);
        }
        using var conn = new SqliteConnection($"Data Source={Path.Combine(dataDir, "anneal.db")};Pooling=false");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "PRAGMA integrity_check";
        var integrity = (string)cmd.ExecuteScalar()!;
        cmd.CommandText = Running;
        return (integrity, (long)cmd.ExecuteScalar()!);
    }

    [Fact]
    public async Task A_trainer_whose_server_is_killed_stops_after_a_checkpoint_and_the_job_resumes_from_it()
    {
        var dataDir = Directory.CreateTempSubdirectory("anneal-orphan-").FullName;
        string jobId;
        var serve = await ServeProcess.StartAsync(dataDir);
        var key = serve.FirstKey!;
        using (serve)
        {
            using var http = serve.Client(key);
            using var form = new MultipartFormDataContent { { new ByteArrayContent(Encoding.UTF8.GetBytes(Samples.Dataset(8))), "file", "d.jsonl" }, { new StringContent("fine-tune"), "purpose" } };
            var file = (await (await http.PostAsync("learning/files", form)).Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
            var body = JobBody(file.Id);
            body["hyperparameters"]!["total_steps"] = 100_000;
            body["hyperparameters"]!["save_steps"] = 1000;
            HttpResponseMessage created;
            do
            {
                await Task.Delay(100);
                created = await http.PostAsync("learning/jobs", JsonContent.Create(body, options: AnnealJson.Options));
            } while (created.StatusCode == HttpStatusCode.Conflict); // file still being validated
            jobId = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!.Id;
            Assert.Equal(HttpStatusCode.OK, (await http.PostAsync($"learning/jobs/{jobId}/start", null)).StatusCode);
            for (var i = 0; i < 600; i++)
            {
                var events = JsonNode.Parse(await http.GetStringAsync($"learning/jobs/{jobId}/events?limit=1000"))!["events"]!.AsArray();
                if (events.Any(e => e!["type"]!.GetValue<string>() == EventTypes.Progress)) break;
                await Task.Delay(200);
            }
            Assert.Single(ServeProcess.TrainersOf(dataDir));

            // SIGKILL: the server cannot tell its trainer anything. No checkpoint is due for 1000 steps.
            serve.Crash();
            var clock = Stopwatch.StartNew();
            Assert.True(await ServeProcess.NoTrainersWithin(dataDir, TimeSpan.FromSeconds(20)), "the trainer outlived its server");
            output.WriteLine($"trainer stopped {clock.Elapsed.TotalSeconds:F1} s after its server was killed");
        }

        // The checkpoint it saved on the way out is where the job continues; nothing is a user error.
        await using var server = await TestServer.StartAsync(dataDir: dataDir, runJobs: true);
        using var client = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/api/") };
        client.DefaultRequestHeaders.Authorization = new("Bearer", key);
        var checkpoints = Directory.GetDirectories(Path.Combine(dataDir, "jobs", jobId, "output", "checkpoints"), "step-*");
        var saved = Assert.Single(checkpoints);
        Assert.True(File.Exists(Path.Combine(saved, "optimizer.bin")));
        var savedStep = int.Parse(Path.GetFileName(saved)["step-".Length..]);
        Assert.InRange(savedStep, 1, 999);
        JsonArray all = [];
        for (var i = 0; i < 600; i++)
        {
            all = JsonNode.Parse(await client.GetStringAsync($"learning/jobs/{jobId}/events?limit=1000"))!["events"]!.AsArray();
            if (all.Any(e => e!["type"]!.GetValue<string>() == EventTypes.Progress && e["data"]!["step"]!.GetValue<int>() > savedStep)) break;
            await Task.Delay(200);
        }
        var requeued = all.Single(e => e!["type"]!.GetValue<string>() == EventTypes.Requeued)!;
        Assert.Equal(savedStep, requeued["data"]!["resume_step"]!.GetValue<int>());
        Assert.Contains(all, e => e!["type"]!.GetValue<string>() == EventTypes.Progress && e["data"]!["step"]!.GetValue<int>() == savedStep + 1);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"learning/jobs/{jobId}/cancel", null)).StatusCode);
    }
}
