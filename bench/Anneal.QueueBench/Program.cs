// Claims per second and claim latency of the job queue, through the server's own claim path
// (JobLeases.Claim + the sft.running event, one row-locked transaction, one connection per claim
// from the pool) with C concurrent claimers draining N queued jobs. Then checks that every job was
// claimed exactly once (attempt = 1, one sft.running event).
//   dotnet bench/Anneal.QueueBench/bin/Release/net10.0/Anneal.QueueBench.dll [--jobs 2000] [--claimers 1,4,16] [--stores postgres,sqlite]
using System.Diagnostics;
using System.Globalization;
using Anneal.Core.Contracts;
using Anneal.Server.Events;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Anneal.Server.Tests.Stores;

var jobs = 2000;
int[] claimerCounts = [1, 4, 16];
string[] stores = ["postgres", "sqlite"];
for (var i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--jobs": jobs = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
        case "--claimers": claimerCounts = args[i + 1].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); break;
        case "--stores": stores = args[i + 1].Split(','); break;
        default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
    }
}

Console.WriteLine($"{jobs} queued jobs per case; load average at start {File.ReadAllText("/proc/loadavg").Split(' ')[0]}; {Environment.ProcessorCount} cores");
Console.WriteLine("| store | claimers | claims/s | p50 ms | p99 ms | max ms | double claims |");
Console.WriteLine("|---|---|---|---|---|---|---|");
foreach (var store in stores)
    foreach (var claimers in claimerCounts)
    {
        var dir = Path.Combine(Path.GetTempPath(), "anneal-queue-bench", Guid.NewGuid().ToString("n"));
        using var db = Db.Open(dir, store == "postgres" ? TestPostgres.Shared.CreateDatabase() : null);
        Fill(db, jobs);
        var latencies = new List<double>[claimers];
        var wall = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, claimers).Select(c => Task.Run(() =>
        {
            var mine = latencies[c] = [];
            var owner = $"bench-{c}";
            while (true)
            {
                var t0 = Stopwatch.GetTimestamp();
                using var conn = db.Connect();
                using var tx = Db.BeginRowLocked(conn);
                if (JobLeases.Claim(conn, tx, owner, TimeSpan.FromMinutes(5)) is not { } claim) break;
                JobEvents.Append(conn, tx, claim.JobId, EventTypes.Running, "info", "Trainer process starting.");
                tx.Commit();
                mine.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        })));
        wall.Stop();
        var all = latencies.SelectMany(l => l).Order().ToList();
        using (var conn = db.Connect())
        {
            var claimed = Db.Scalar<long>(conn, null, "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND attempt = 1");
            var events = Db.Scalar<long>(conn, null, "SELECT COUNT(*) FROM job_events WHERE type = @t", ("@t", EventTypes.Running));
            var doubles = Db.Scalar<long>(conn, null, "SELECT COUNT(*) FROM (SELECT job_id FROM job_events WHERE type = @t GROUP BY job_id HAVING COUNT(*) > 1) d", ("@t", EventTypes.Running));
            if (claimed != jobs || events != jobs || all.Count != jobs)
                throw new InvalidOperationException($"{store}/{claimers}: {claimed} jobs claimed once, {events} running events, {all.Count} claims; expected {jobs} each");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {store} | {claimers} | {jobs / wall.Elapsed.TotalSeconds:F0} | {Pct(all, 0.50):F2} | {Pct(all, 0.99):F2} | {all[^1]:F2} | {doubles} |"));
        }
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }
return 0;

static double Pct(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];

static void Fill(Db db, int n)
{
    using var conn = db.Connect();
    using var tx = Db.Begin(conn);
    for (var i = 0; i < n; i++)
    {
        var id = $"job_{i:D6}";
        var t = DateTimeOffset.UnixEpoch.AddSeconds(i).ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);
        Db.Exec(conn, tx, """
            INSERT INTO jobs (id, org, status, model, mode, training_type, training_file_id, hyperparameters, created_at, queued_at)
            VALUES (@id, 'org_bench', 'queued', 'anneal/tiny-qwen3', 'lora', 'sft_offline', 'file_bench', '{}', @t, @t)
            """, ("@id", id), ("@t", t));
    }
    tx.Commit();
}
