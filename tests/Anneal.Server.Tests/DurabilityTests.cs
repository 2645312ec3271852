// Acknowledged writes survive a crash. A process killed with SIGKILL leaves exactly the files that
// were on disk at that instant (anneal.db, anneal.db-wal, files/); copying them while the server
// is still running, without any shutdown, is that state. A new server on the copy must see every
// acknowledged upload and job, with intact bytes, and re-queue the job that was running.
using System.Net.Http.Json;
using System.Security.Cryptography;
using Anneal.Core.Contracts;
using Anneal.Server.Tests.Stores;

namespace Anneal.Server.Tests;

public class DurabilityTests
{
    [SqliteFact]
    public async Task A_copy_of_the_data_dir_taken_without_shutdown_holds_every_acknowledged_upload_and_job()
    {
        await using var t = await TestServer.StartAsync();
        var files = new List<FileObject>();
        for (var i = 1; i <= 5; i++) files.Add(await t.UploadReadyAsync(TestServer.Dataset(i)));
        var jobs = new List<JobObject>();
        foreach (var f in files) jobs.Add(await t.CreateJobAsync(f.Id));
        await t.StartJobAsync(jobs[0].Id);

        var crashed = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        Directory.CreateDirectory(Path.Combine(crashed, "files"));
        foreach (var name in new[] { "anneal.db", "anneal.db-wal" })
            if (File.Exists(Path.Combine(t.DataDir, name)))
                File.Copy(Path.Combine(t.DataDir, name), Path.Combine(crashed, name));
        foreach (var blob in Directory.GetFiles(Path.Combine(t.DataDir, "files")))
            File.Copy(blob, Path.Combine(crashed, "files", Path.GetFileName(blob)));
        Assert.True(File.Exists(Path.Combine(crashed, "anneal.db-wal"))); // the commits live in the WAL, not yet checkpointed

        await using var after = await TestServer.StartAsync(dataDir: crashed);
        Assert.Null(after.Server.FirstApiKey); // the key survived too
        using var client = after.Client(t.ApiKey);
        foreach (var f in files)
        {
            var again = (await client.GetFromJsonAsync<FileObject>($"learning/files/{f.Id}", AnnealJson.Options))!;
            Assert.Equal(FileStatus.Ready, again.Status);
            Assert.Equal(f.Sha256, Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(Path.Combine(crashed, "files", f.Sha256)))));
        }
        foreach (var j in jobs)
            Assert.Equal(j.Id == jobs[0].Id ? JobStatus.Queued : JobStatus.Created,
                (await client.GetFromJsonAsync<JobObject>($"learning/jobs/{j.Id}", AnnealJson.Options))!.Status);
    }

    [SqliteFact]
    public async Task Migrations_are_recorded_in_schema_version_and_not_reapplied_on_restart()
    {
        await using var t = await TestServer.StartAsync();
        await t.RestartAsync();
        using var conn = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(t.DataDir, "anneal.db")};Pooling=false");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT group_concat(version) FROM (SELECT version FROM schema_version ORDER BY version)";
        // Every embedded migration script that SQLite runs, in order (NNNN_name.sql, not NNNN_name.postgres.sql).
        var expected = string.Join(",", typeof(ServerHost).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith("Migrations/", StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Where(n => !n.EndsWith(".postgres.sql", StringComparison.Ordinal))
            .Select(n => int.Parse(n["Migrations/".Length..].Split('_')[0], System.Globalization.CultureInfo.InvariantCulture))
            .Order());
        Assert.StartsWith("1,2,3", expected);
        Assert.Equal(expected, cmd.ExecuteScalar());
        cmd.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", cmd.ExecuteScalar());
    }

    [Fact]
    public async Task On_start_a_trainer_orphaned_by_a_crashed_server_is_stopped_before_its_job_is_requeued()
    {
        await using var t = await TestServer.StartAsync(o => o with { CancelGracePeriod = TimeSpan.FromSeconds(1) });
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.Server.DisposeAsync();

        // The state a SIGKILLed server leaves: the job `running`, its trainer still alive (and deaf to SIGTERM).
        var spec = Path.Combine(t.DataDir, "jobs", job.Id, "spec.json");
        Directory.CreateDirectory(Path.GetDirectoryName(spec)!);
        var command = ScriptTrainer.Write(ScriptTrainer.IgnoresTerm);
        var psi = new System.Diagnostics.ProcessStartInfo(command[0]) { ArgumentList = { command[1], "trainer", "run", "--spec", spec } };
        using var orphan = System.Diagnostics.Process.Start(psi)!;
        Assert.Equal(1, t.Sql($"UPDATE jobs SET status = 'running', trainer_pid = {orphan.Id} WHERE id = '{job.Id}'"));
        Assert.False(orphan.HasExited);

        await t.RestartAsync();
        Assert.True(orphan.WaitForExit(TimeSpan.FromSeconds(10)), "the orphaned trainer is still running");
        Assert.Equal(JobStatus.Queued, (await t.GetJobAsync(job.Id)).Status);
    }
}
