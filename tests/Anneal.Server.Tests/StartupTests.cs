// Start-up guards: one server per data folder (a second one is refused and leaves the first one's
// running job alone), a taken listen address is a ServerStartException with one readable line,
// and start-up recovery never records sft.requeued for a job that already reached a final status.
using System.Net;
using System.Net.Sockets;
using Anneal.Core.Contracts;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Anneal.Server.Tests.Stores;

namespace Anneal.Server.Tests;

public class StartupTests
{
    static string JobDir(TestServer t, string id) => Path.Combine(t.DataDir, "jobs", id);

    static async Task WaitForFile(string path)
    {
        for (var i = 0; i < 400 && !File.Exists(path); i++) await Task.Delay(50);
        Assert.True(File.Exists(path), $"{path} never appeared");
    }

    static async Task<JobObject> StartRunningJob(TestServer t)
    {
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(job.Id);
        await WaitForFile(Path.Combine(JobDir(t, job.Id), "started"));
        await t.WaitJobAsync(job.Id, j => j.Status == JobStatus.Running);
        return job;
    }

    [SqliteFact]
    public async Task A_second_server_on_the_same_data_folder_is_refused_and_the_running_job_keeps_running()
    {
        await using var t = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.CheckpointThenWaits) });
        var job = await StartRunningJob(t);

        var e = await Assert.ThrowsAsync<ServerStartException>(() =>
            ServerHost.StartAsync(t.Options with { TrainerCommand = [] }));
        Assert.Contains($"data folder {Path.GetFullPath(t.DataDir)} is in use by another Anneal server (pid {Environment.ProcessId})", e.Message);
        Assert.Contains("--data-dir", e.Message);
        Assert.DoesNotContain("\n", e.Message);

        // The refused server touched nothing: the job is still running with no new events.
        await Task.Delay(500);
        Assert.Equal(JobStatus.Running, (await t.GetJobAsync(job.Id)).Status);
        var events = await t.EventsAsync(job.Id);
        Assert.DoesNotContain(events, x => x.Type is EventTypes.Requeued or EventTypes.Failed);
    }

    [Fact]
    public async Task The_data_folder_is_free_again_after_the_server_stops()
    {
        var t = await TestServer.StartAsync();
        var options = t.Options;
        await t.Server.DisposeAsync();
        await using var again = await ServerHost.StartAsync(options);
        Assert.StartsWith("http://127.0.0.1:", again.BaseUrl);
        await again.DisposeAsync();
        try { Directory.Delete(options.DataDir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_port_in_use_is_a_one_line_ServerStartException_and_releases_the_data_folder()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var dir = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        var options = new ServerOptions { Urls = $"http://127.0.0.1:{port}", DataDir = dir };

        var e = await Assert.ThrowsAsync<ServerStartException>(() => ServerHost.StartAsync(options));
        Assert.Equal($"address 127.0.0.1:{port} is already in use (another anneal serve?); pick another with --urls", e.Message);

        // The failed start released its lock: a server on a free port can use the folder.
        await using var server = await ServerHost.StartAsync(options with { Urls = "http://127.0.0.1:0" });
        Assert.StartsWith("http://127.0.0.1:", server.BaseUrl);
        await server.DisposeAsync();
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }

    [SqliteFact] // on a shared store a live server's job keeps its lease: SharedStoreTests
    public async Task Recovery_never_records_requeued_for_a_job_that_ended_meanwhile()
    {
        // Recovery run against a live server's job (what a second server did before the lock):
        // it stops the trainer, the live server records the end, and the two must not contradict.
        await using var t = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.CheckpointThenWaits) });
        var job = await StartRunningJob(t);
        for (var i = 0; i < 100 && (await t.EventsAsync(job.Id)).All(e => e.Type != EventTypes.CheckpointSaved); i++) await Task.Delay(50);

        Recovery.RequeueInterrupted(new Db(t.DataDir, t.Options.Database), t.Options);

        // Let the live server record the trainer's exit (a re-queued job may be claimed again at
        // once, so wait for the events rather than for a status), then check they agree.
        for (var i = 0; i < 300 && (await t.EventsAsync(job.Id)).All(e => e.Type is not (EventTypes.Failed or EventTypes.Requeued)); i++)
            await Task.Delay(50);
        await Task.Delay(1000);
        var final = await t.GetJobAsync(job.Id);
        var events = await t.EventsAsync(job.Id);
        var endings = events.Where(e => e.Type is EventTypes.Failed or EventTypes.Requeued).Select(e => e.Type).ToList();
        Assert.True(endings.Count >= 1, string.Join(", ", events.Select(e => e.Type)));
        Assert.False(endings.Contains(EventTypes.Failed) && endings.Contains(EventTypes.Requeued),
            $"both sft.failed and sft.requeued recorded: {string.Join(", ", events.Select(e => $"{e.Type} ({e.Message})"))}; status {final.Status}");
        if (endings[^1] == EventTypes.Requeued) Assert.NotEqual(JobStatus.Failed, final.Status);
        else Assert.Equal(JobStatus.Failed, final.Status);
    }
}
