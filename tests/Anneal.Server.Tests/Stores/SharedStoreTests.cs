// Several servers on one PostgreSQL database and one data folder: every job runs once, event seq
// stays strictly increasing per job under concurrent writers, a server whose lease lapsed (stalled,
// then back) has its late writes refused while another server finishes the job, and bad
// --database values are refused with a reason.
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Events;
using Anneal.Server.Hosting;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Tests.Stores;

public class SharedStoreTests
{
    /// <summary>
    /// First attempt: prints a numbered "stale" progress step every 0.1 s (also into printed.txt),
    /// deaf to the polite stop signals, until killed. Any later attempt succeeds at once.
    /// </summary>
    const string StallsOnceThenSucceeds = """
        set -u
        SPEC="$4"
        JOBDIR="$(dirname "$SPEC")"
        OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$SPEC")"
        if [ -e "$JOBDIR/first-attempt" ]; then
          mkdir -p "$OUT/final"
          printf '{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"%s","final_path":"%s/final"}}\n' "$OUT" "$OUT"
          exit 0
        fi
        touch "$JOBDIR/first-attempt"
        trap '' TERM USR1
        i=0
        while true; do
          i=$((i+1)); echo $i > "$JOBDIR/printed.tmp"; mv -f "$JOBDIR/printed.tmp" "$JOBDIR/printed.txt"
          printf '{"type":"sft.progress","level":"info","message":"stale step %s","data":{"step":%s,"total_steps":100000}}\n' $i $i
          sleep 0.1
        done
        """;

    static async Task<(TestServer A, TestServer B, HttpClient BHttp)> TwoServers(IReadOnlyList<string> trainerA, IReadOnlyList<string> trainerB,
        Func<ServerOptions, ServerOptions>? a = null, Func<ServerOptions, ServerOptions>? b = null)
    {
        var first = await TestServer.StartAsync(o => (a ?? (x => x))(o with { TrainerCommand = trainerA, MaxConcurrentJobs = 2 }));
        var second = await TestServer.StartAsync(o => (b ?? (x => x))(o with { TrainerCommand = trainerB, MaxConcurrentJobs = 2, Database = first.Options.Database }), first.DataDir);
        return (first, second, second.Client(first.ApiKey));
    }

    static async Task<JobObject> CreateAndStart(HttpClient create, HttpClient start, string fileId)
    {
        var response = await create.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(fileId)));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var job = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        var started = await start.PostAsync($"learning/jobs/{job.Id}/start", null);
        Assert.True(started.StatusCode == HttpStatusCode.OK, await started.Content.ReadAsStringAsync());
        return job;
    }

    [PostgresFact]
    public async Task Two_servers_on_one_database_and_folder_run_every_job_exactly_once_with_strictly_increasing_seq()
    {
        var trainer = ScriptTrainer.Write(ScriptTrainer.ShortSuccess);
        var (a, b, bHttp) = await TwoServers(trainer, trainer);
        await using var _ = a;
        await using var __ = b;
        var file = await a.UploadReadyAsync();
        var jobs = new List<JobObject>();
        // Created on one server, started through the other.
        for (var i = 0; i < 8; i++)
            jobs.Add(i % 2 == 0 ? await CreateAndStart(a.Http, bHttp, file.Id) : await CreateAndStart(bHttp, a.Http, file.Id));
        foreach (var job in jobs)
            Assert.Equal(JobStatus.Succeeded, (await a.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status), 120)).Status);
        foreach (var job in jobs)
        {
            var events = await a.EventsAsync(job.Id);
            Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
            var running = events.Where(e => e.Type == EventTypes.Running).ToList();
            Assert.Single(running); // claimed once, by one server
            Assert.Equal(1, running[0].Data!["attempt"]!.GetValue<long>());
            Assert.Single(events, e => e.Type == EventTypes.Completed);
        }
        // Both servers' listings and event streams read the same store.
        var fromB = await bHttp.GetFromJsonAsync<JobList>("learning/jobs?limit=100", AnnealJson.Options);
        Assert.Equal(jobs.Select(j => j.Id).Order(), fromB!.Jobs.Select(j => j.Id).Order());
    }

    [PostgresFact]
    public async Task Concurrent_event_writers_on_several_connections_never_reuse_a_seq()
    {
        await using var t = await TestServer.StartAsync();
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        const int writers = 6, each = 40;
        var tasks = Enumerable.Range(0, writers).Select(w => Task.Run(() =>
        {
            using var db = new Db(t.DataDir, t.Options.Database);
            for (var i = 0; i < each; i++)
            {
                using var conn = db.Connect();
                JobEvents.Append(conn, null, job.Id, EventTypes.Log, "info", $"writer {w} event {i}");
            }
        })).ToList();
        await Task.WhenAll(tasks);
        var events = await t.EventsAsync(job.Id);
        Assert.Equal(writers * each, events.Count(e => e.Type == EventTypes.Log));
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
    }

    [PostgresFact]
    public async Task A_server_whose_lease_lapsed_has_its_late_writes_refused_while_the_job_is_recovered_and_finished()
    {
        // A renews every LeaseDuration/3 (an hour here): it behaves as a stalled server would. B
        // notices lapsed leases within half a second.
        var trainer = ScriptTrainer.Write(StallsOnceThenSucceeds);
        var (a, b, _) = await TwoServers(trainer, trainer,
            a: o => o with { LeaseDuration = TimeSpan.FromHours(3), MaxConcurrentJobs = 1 },
            b: o => o with { LeaseDuration = TimeSpan.FromSeconds(1.5) });
        await using var __ = a;
        await using var ___ = b;
        var job = await a.CreateJobAsync((await a.UploadReadyAsync()).Id);
        await a.StartJobAsync(job.Id);
        await a.WaitJobAsync(job.Id, j => j.Progress?.Step >= 3);

        // The lease lapses: B takes the job over (which fences A out), stops A's trainer and re-queues
        // the job; A's trainer goes on printing for the grace period, and A's writes are refused.
        Assert.Equal(1, a.Sql($"UPDATE jobs SET lease_until = 1 WHERE id = '{job.Id}'")); // expired (0 would mean handed back)
        var done = await a.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status), 90);
        Assert.Equal(JobStatus.Succeeded, done.Status); // not the `failed` A would have written when its trainer was killed
        var events = await a.EventsAsync(job.Id);
        var requeued = Assert.Single(events, e => e.Type == EventTypes.Requeued);
        Assert.Equal("lease_expired", requeued.Data!["reason"]!.GetValue<string>());
        Assert.Equal(2, events.Last(e => e.Type == EventTypes.Running).Data!["attempt"]!.GetValue<long>());
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Seq));
        Assert.DoesNotContain(events, e => e.Seq > requeued.Seq && e.Message.StartsWith("stale", StringComparison.Ordinal));
        var recorded = events.Where(e => e.Message.StartsWith("stale", StringComparison.Ordinal)).Max(e => e.Data!["step"]!.GetValue<long>());
        var printed = long.Parse(File.ReadAllText(Path.Combine(a.DataDir, "jobs", job.Id, "printed.txt")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(printed - recorded >= 10, $"A's trainer printed {printed} steps and {recorded} were recorded: its late writes were not refused");
        using var db = new Db(a.DataDir, a.Options.Database);
        using var conn = db.Connect();
        Assert.False(JobLeases.Holds(conn, null, job.Id, new JobLease("stalled", 1)));
    }

    [Theory]
    [InlineData("mysql://u@h/db", "is not a postgres://")]
    [InlineData("postgres://u@localhost:5432/", "names no database")]
    [InlineData("postgres://u@localhost/db?nosuchoption=1", "option 'nosuchoption'")]
    [InlineData("not a url", "is not a postgres://")]
    public void A_bad_database_url_is_refused_naming_what_is_wrong(string url, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => DatabaseUrl.ToConnectionString(url));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_database_url_becomes_a_connection_string_and_its_password_is_never_shown()
    {
        var cs = DatabaseUrl.ToConnectionString("postgres://anneal:s%40cret@db.example:6543/jobs?sslmode=require");
        Assert.Contains("Host=db.example", cs);
        Assert.Contains("Port=6543", cs);
        Assert.Contains("Database=jobs", cs);
        Assert.Contains("Password=s@cret", cs);
        Assert.Contains("SSL Mode=Require", cs);
        Assert.Equal("postgres://anneal:***@db.example:6543/jobs", DatabaseUrl.Redact("postgres://anneal:s%40cret@db.example:6543/jobs"));
        Assert.Contains("Host=/run/postgresql", DatabaseUrl.ToConnectionString("postgres://anneal@/jobs?host=/run/postgresql"));
    }

    [Fact]
    public async Task An_unreachable_database_is_a_one_line_start_error_naming_it()
    {
        var dir = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        var e = await Assert.ThrowsAsync<ServerStartException>(() => ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0", DataDir = dir, Database = "postgres://anneal:pw@127.0.0.1:1/jobs",
        }));
        Assert.StartsWith("database postgres://anneal:***@127.0.0.1:1/jobs: ", e.Message);
        Assert.DoesNotContain("pw", e.Message.Replace("postgres", ""));
    }

    [PostgresFact]
    public async Task An_event_stream_on_one_server_sees_the_events_of_a_job_another_server_runs_promptly()
    {
        // One progress event at once, then quiet for 5 s (well past the poll, short of the 15 s keep-alive), then done.
        var trainer = ScriptTrainer.Write("""
            set -u
            OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$4")"
            printf '%s\n' '{"type":"sft.progress","level":"info","message":"step 1/2","data":{"step":1,"total_steps":2,"loss":2.5}}'
            sleep 5
            mkdir -p "$OUT/final"
            printf '{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"%s","final_path":"%s/final"}}\n' "$OUT" "$OUT"
            """);
        var (a, b, bHttp) = await TwoServers(trainer, []);
        await using var _ = a;
        await using var __ = b;
        var file = await a.UploadReadyAsync();
        var response = await a.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id)));
        var job = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;

        // The stream is on B (which runs no trainer); the job runs on A.
        var request = new HttpRequestMessage(HttpMethod.Get, $"learning/jobs/{job.Id}/events");
        request.Headers.Accept.ParseAdd("text/event-stream");
        using var stream = await bHttp.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await stream.Content.ReadAsStreamAsync());
        async Task<TimeSpan> Until(string type, System.Diagnostics.Stopwatch since)
        {
            while (await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) is { } line)
            {
                if (line == $"event: {type}") return since.Elapsed;
                if (since.Elapsed > TimeSpan.FromSeconds(60)) break;
            }
            throw new InvalidOperationException($"no {type} on the stream within a minute");
        }
        await Until(EventTypes.Created, System.Diagnostics.Stopwatch.StartNew());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(HttpStatusCode.OK, (await a.Http.PostAsync($"learning/jobs/{job.Id}/start", null)).StatusCode);
        var progress = await Until(EventTypes.Progress, clock);
        Assert.True(progress < TimeSpan.FromSeconds(4), $"B's stream saw A's first progress event after {progress.TotalSeconds:0.0} s");
        var atProgress = System.Diagnostics.Stopwatch.StartNew();
        var completed = await Until(EventTypes.Completed, atProgress);
        // The trainer's 5 s of quiet, then the event within a poll or two (not after a 15 s wait).
        Assert.True(completed < TimeSpan.FromSeconds(10), $"B's stream saw completion {completed.TotalSeconds:0.0} s after progress");
        Assert.Equal(JobStatus.Succeeded, (await a.GetJobAsync(job.Id)).Status);
    }
}
