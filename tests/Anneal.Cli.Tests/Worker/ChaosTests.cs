// The scale-out chaos test: two `anneal serve` processes on one PostgreSQL database and one data
// folder (control planes only: --max-concurrent-jobs 0) and three `anneal worker` processes run N
// jobs on the tiny model while a random worker and a random server are SIGKILLed (and restarted)
// at random points, several times. Then: every acknowledged job ends exactly once, succeeded; no
// two attempts of a job ever had trainers alive at the same time (/proc, sampled every 50 ms) and
// the server recorded them one after the other (each claim after the previous attempt's re-queue);
// no acknowledged upload is lost (the dataset's bytes, every checkpoint the server recorded, every
// final model); at least one job resumed from a checkpoint and its steps continued from there.
// The counts are printed. CI runs it small; ANNEAL_CHAOS_JOBS=200 (and ANNEAL_CHAOS_ROUNDS,
// ANNEAL_CHAOS_SEED) runs the issue's full size by hand (bench/README.md, "Scaling out").
// Needs PostgreSQL's binaries (test.sh installs them); skipped without them.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Anneal.Cli.Tests.EndToEnd;
using Anneal.Core.Contracts;
using Xunit.Abstractions;

namespace Anneal.Cli.Tests.Worker;

/// <summary>A test that starts its own PostgreSQL cluster: skipped where PostgreSQL is not installed.</summary>
public sealed class PostgresInstalledFactAttribute : FactAttribute
{
    public PostgresInstalledFactAttribute()
    {
        if (!TestPostgres.Available) Skip = "PostgreSQL is not installed (initdb not found; test.sh installs it)";
    }
}

[Collection("trainer")]
public partial class ChaosTests(ITestOutputHelper output)
{
    const string Token = "chaos-worker-token-0123456789";
    const double LeaseSeconds = 4;

    static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : fallback;

    static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [GeneratedRegex(@"/jobs/([^/]+)/attempt-([0-9]+)/spec\.json")]
    private static partial Regex SpecPath();

    /// <summary>Live trainers of the workers' folders, as (job, attempt) per pid.</summary>
    static List<(string Job, long Attempt)> LiveTrainers(string workersRoot)
    {
        var live = new List<(string, long)>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out _)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (!cmdline.Contains("trainer\0run\0") || !cmdline.Contains(workersRoot)) continue;
            if (SpecPath().Match(cmdline) is { Success: true } m) live.Add((m.Groups[1].Value, long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)));
        }
        return live;
    }

    [PostgresInstalledFact]
    public async Task Two_servers_and_three_workers_on_one_postgres_run_every_job_exactly_once_through_random_sigkills()
    {
        var jobCount = Setting("ANNEAL_CHAOS_JOBS", 6);
        var rounds = Setting("ANNEAL_CHAOS_ROUNDS", Math.Max(2, jobCount / 10));
        var seed = Setting("ANNEAL_CHAOS_SEED", 15);
        var random = new Random(seed);
        var clock = Stopwatch.StartNew();
        var database = TestPostgres.Shared.CreateDatabase();
        var dataDir = Directory.CreateTempSubdirectory("anneal-chaos-data-").FullName;
        var workersRoot = Directory.CreateTempSubdirectory("anneal-chaos-workers-").FullName;
        string[] urls = [$"http://127.0.0.1:{FreePort()}", $"http://127.0.0.1:{FreePort()}"];
        string[] serveOptions = ["--database", database, "--worker-token", Token, "--max-concurrent-jobs", "0",
            "--lease-seconds", LeaseSeconds.ToString(CultureInfo.InvariantCulture)];

        async Task<ServeProcess> Serve(int i)
        {
            // The port of a killed server may take a moment to be free again.
            for (var attempt = 0; ; attempt++)
            {
                try { return await ServeProcess.StartAsync(dataDir, urls[i], serveOptions); }
                catch (InvalidOperationException) when (attempt < 20) { await Task.Delay(500); }
            }
        }

        var servers = new ServeProcess[2];
        servers[0] = await Serve(0); // applies the migrations and prints the first key
        servers[1] = await Serve(1);
        var key = servers[0].FirstKey!;
        WorkerProcess StartWorker(int i) => WorkerProcess.Start(urls[i % 2], Token, Path.Combine(workersRoot, $"w{i + 1}"), $"w{i + 1}");
        var workers = Enumerable.Range(0, 3).Select(StartWorker).ToArray();
        var killed = new List<WorkerProcess>();

        // Trainers seen alive, sampled: per job and attempt, and any moment two attempts of a job ran at once.
        var seen = new ConcurrentDictionary<(string Job, long Attempt), bool>();
        var overlaps = new ConcurrentBag<string>();
        using var stopSampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stopSampling.IsCancellationRequested)
            {
                var live = LiveTrainers(workersRoot);
                foreach (var t in live) seen.TryAdd(t, true);
                foreach (var g in live.Distinct().GroupBy(t => t.Job).Where(g => g.Count() > 1))
                    overlaps.Add($"{g.Key}: attempts {string.Join(", ", g.Select(t => t.Attempt))} alive together");
                await Task.Delay(50);
            }
        });

        var workerKills = 0;
        var serverKills = 0;
        try
        {
            // One dataset, N jobs: created and started through both servers (each acknowledged with 201 and 200).
            var dataset = Encoding.UTF8.GetBytes(Samples.Dataset(6));
            string fileId;
            using (var http = servers[0].Client(key))
            {
                using var form = new MultipartFormDataContent { { new ByteArrayContent(dataset), "file", "chaos.jsonl" }, { new StringContent("fine-tune"), "purpose" } };
                var uploaded = await http.PostAsync("learning/files", form);
                Assert.True(uploaded.StatusCode is HttpStatusCode.Created or HttpStatusCode.OK, await uploaded.Content.ReadAsStringAsync());
                fileId = (await uploaded.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!.Id;
            }
            var jobs = new List<string>();
            for (var i = 0; i < jobCount; i++)
            {
                using var http = servers[i % 2].Client(key);
                var body = new JsonObject
                {
                    ["model"] = Samples.TinyModel, ["training_type"] = "sft_offline", ["training_file_id"] = fileId,
                    ["hyperparameters"] = new JsonObject { ["total_steps"] = 6, ["save_steps"] = 2, ["per_device_batch"] = 1, ["sequence_length"] = 32, ["learning_rate"] = 1e-3 },
                };
                var created = await http.PostAsync("learning/jobs", JsonContent.Create(body, options: AnnealJson.Options));
                Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
                var id = (await created.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!.Id;
                using var starter = servers[(i + 1) % 2].Client(key);
                var started = await starter.PostAsync($"learning/jobs/{id}/start", null);
                Assert.True(started.StatusCode == HttpStatusCode.OK, await started.Content.ReadAsStringAsync());
                jobs.Add(id);
            }

            async Task<List<JobObject>> Jobs()
            {
                foreach (var s in servers.OrderBy(_ => random.Next()))
                {
                    try
                    {
                        using var http = s.Client(key);
                        var all = new List<JobObject>();
                        foreach (var id in jobs) all.Add((await http.GetFromJsonAsync<JobObject>($"learning/jobs/{id}", AnnealJson.Options))!);
                        return all;
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
                }
                return [];
            }

            bool AllDone(List<JobObject> all) => all.Count == jobCount && all.All(j => JobStatus.IsTerminal(j.Status));

            // The chaos: each round SIGKILLs a worker (preferably one whose trainer has a checkpoint
            // on the server, so its job must resume from it) and a server, at random points.
            for (var round = 0; round < rounds; round++)
            {
                await Task.Delay(random.Next(1500, 5000));
                if (AllDone(await Jobs())) break;
                var victim = random.Next(3);
                for (var wait = 0; wait < 600; wait++)
                {
                    var withCheckpoint = Enumerable.Range(0, 3).Where(w => LiveTrainers(workers[w].WorkDir).Any(t =>
                        Directory.Exists(Path.Combine(dataDir, "jobs", t.Job, "output", "checkpoints", "step-2")))).ToList();
                    if (withCheckpoint.Count > 0)
                    {
                        victim = withCheckpoint[random.Next(withCheckpoint.Count)];
                        break;
                    }
                    await Task.Delay(100);
                }
                workers[victim].Crash(); // its trainer is left to notice and stop by itself
                workerKills++;
                output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: SIGKILL worker w{victim + 1}");
                killed.Add(workers[victim]);
                workers[victim] = StartWorker(victim);

                await Task.Delay(random.Next(500, 4000));
                var server = random.Next(2);
                servers[server].Crash();
                serverKills++;
                output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: SIGKILL server {(char)('A' + server)}");
                servers[server].Dispose();
                await Task.Delay(random.Next(200, 2000));
                servers[server] = await Serve(server);
            }

            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120 + 20 * jobCount);
            List<JobObject> final;
            while (!AllDone(final = await Jobs()))
            {
                Assert.True(DateTime.UtcNow < deadline, "jobs not finished: " + string.Join(", ", final.Where(j => !JobStatus.IsTerminal(j.Status)).Select(j => $"{j.Id} {j.Status}")));
                await Task.Delay(500);
            }
            await stopSampling.CancelAsync();
            await sampler;

            // Every acknowledged job ended exactly once, succeeded, with its model.
            Assert.Equal(jobCount, final.Count);
            Assert.All(final, j => Assert.True(j.Status == JobStatus.Succeeded, $"{j.Id} {j.Status}: {j.Error?.Message}"));
            using var client = servers[0].Client(key);
            var attempts = 0;
            var requeues = new Dictionary<string, int>();
            var resumed = 0;
            var checkpointsRecorded = 0;
            foreach (var id in jobs)
            {
                var events = new List<JobEvent>();
                while (true)
                {
                    var page = (await client.GetFromJsonAsync<EventList>($"learning/jobs/{id}/events?since_seq={(events.Count == 0 ? 0 : events[^1].Seq)}&limit=1000", AnnealJson.Options))!.Events;
                    if (page.Count == 0) break;
                    events.AddRange(page);
                }
                Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
                var terminal = events.Where(e => e.Type is EventTypes.Completed or EventTypes.Failed or EventTypes.Cancelled).ToList();
                Assert.True(terminal.Count == 1 && terminal[0].Type == EventTypes.Completed, $"{id}: terminal events {string.Join(", ", terminal.Select(e => e.Type))}");

                // Attempts one after the other: each claim (sft.running) after the previous attempt
                // was re-queued, nothing of an attempt recorded once it was re-queued, and each
                // attempt's steps increasing from the checkpoint it resumed from.
                var running = events.Where(e => e.Type == EventTypes.Running).ToList();
                attempts += running.Count;
                Assert.Equal(Enumerable.Range(1, running.Count).Select(i => (long)i), running.Select(e => e.Data!["attempt"]!.GetValue<long>()));
                for (var a = 0; a < running.Count; a++)
                {
                    var end = a + 1 < running.Count ? running[a + 1].Seq : long.MaxValue;
                    var segment = events.Where(e => e.Seq > running[a].Seq && e.Seq < end).ToList();
                    var requeue = segment.FirstOrDefault(e => e.Type == EventTypes.Requeued);
                    if (a + 1 < running.Count) Assert.True(requeue is not null, $"{id}: attempt {a + 2} claimed before attempt {a + 1} was re-queued");
                    var live = requeue is null ? segment : segment.Where(e => e.Seq < requeue.Seq).ToList();
                    Assert.DoesNotContain(segment.Where(e => requeue is not null && e.Seq > requeue.Seq), e => e.Type is EventTypes.Progress or EventTypes.CheckpointSaved);
                    var steps = live.Where(e => e.Type == EventTypes.Progress).Select(e => e.Data!["step"]!.GetValue<long>()).ToList();
                    Assert.True(steps.SequenceEqual(steps.Order().Distinct()), $"{id} attempt {a + 1}: steps {string.Join(",", steps)}");
                    if (a > 0)
                    {
                        var previous = events.Last(e => e.Seq < running[a].Seq && e.Type == EventTypes.Requeued);
                        var reason = previous.Data!["reason"]!.GetValue<string>();
                        requeues[reason] = requeues.GetValueOrDefault(reason) + 1;
                        if (previous.Data!["resume_step"] is { } resumeStep && steps.Count > 0)
                        {
                            Assert.True(steps[0] > resumeStep.GetValue<long>(), $"{id} attempt {a + 1} started at step {steps[0]}, not after its checkpoint at {resumeStep}");
                            resumed++;
                        }
                    }
                }

                // No acknowledged upload lost: every checkpoint the server recorded is on disk, and the final model.
                var output = Path.Combine(dataDir, "jobs", id, "output");
                foreach (var saved in events.Where(e => e.Type == EventTypes.CheckpointSaved))
                {
                    var step = saved.Data!["step"]!.GetValue<long>();
                    Assert.True(File.Exists(Path.Combine(output, "checkpoints", $"step-{step}", "trainer_state.json")), $"{id}: recorded checkpoint step-{step} is missing");
                    checkpointsRecorded++;
                }
                Assert.True(File.Exists(Path.Combine(output, "final", "config.json")), $"{id}: the final model is missing");
            }
            using var workerHttp = new HttpClient { DefaultRequestHeaders = { Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token) } };
            var served = await workerHttp.GetByteArrayAsync($"{urls[1]}/api/workers/files/{fileId}");
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(dataset)), Convert.ToHexStringLower(SHA256.HashData(served)));

            // No two attempts of one job had trainers alive at once.
            Assert.True(overlaps.IsEmpty, string.Join("; ", overlaps.Distinct()));
            Assert.True(resumed >= 1, "no job resumed from a checkpoint: the kills missed every running job");

            var summary = $"chaos: {jobCount} jobs, {final.Count(j => j.Status == JobStatus.Succeeded)} succeeded exactly once; " +
                $"{attempts} attempts ({seen.Count} trainers seen), re-queued {string.Join(", ", requeues.Select(r => $"{r.Value} × {r.Key}"))}; " +
                $"{resumed} resumed from a checkpoint; {checkpointsRecorded} recorded checkpoints all on disk; " +
                $"{workerKills} worker and {serverKills} server SIGKILLs; 0 overlapping attempts; seed {seed}; {clock.Elapsed.TotalSeconds:0} s";
            output.WriteLine(summary);
            System.Console.WriteLine(summary);
        }
        finally
        {
            await stopSampling.CancelAsync();
            foreach (var w in workers.Concat(killed)) w.Dispose();
            foreach (var s in servers) s.Dispose();
            foreach (var dir in new[] { dataDir, workersRoot })
                try { Directory.Delete(dir, recursive: true); }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
        }
    }
}
