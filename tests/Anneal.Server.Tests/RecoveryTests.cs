// Crash recovery of a running job: what the trainer left on disk wins over what the database
// heard. A server killed with SIGKILL may have missed checkpoints (and the trainer prunes the
// optimizer state of older ones) or the whole end of the run; half-written folders are removed.
// Pause and shutdown ask the trainer for a checkpoint first (SIGUSR1), and every trainer is told
// its server's pid so it can stop when the server dies.
using System.Net.Http.Json;
using Anneal.Core.Contracts;
using Microsoft.Data.Sqlite;

namespace Anneal.Server.Tests;

public class RecoveryTests
{
    static string JobDir(TestServer t, string id) => Path.Combine(t.DataDir, "jobs", id);

    static void Sql(TestServer t, string sql)
    {
        using var conn = new SqliteConnection($"Data Source={Path.Combine(t.DataDir, "anneal.db")};Pooling=false");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    static string Checkpoint(string output, int step, bool optimizer = true)
    {
        var dir = Path.Combine(output, "checkpoints", $"step-{step}");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "trainer_state.json"), $"{{\"step\":{step}}}");
        if (optimizer) File.WriteAllText(Path.Combine(dir, "optimizer.bin"), "x");
        return dir;
    }

    /// <summary>A created job left `running` by a server that is now stopped (the state SIGKILL leaves).</summary>
    static async Task<(TestServer T, JobObject Job, string Output)> CrashedWhileRunning()
    {
        var t = await TestServer.StartAsync();
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.Server.DisposeAsync();
        Sql(t, $"UPDATE jobs SET status = 'running' WHERE id = '{job.Id}'");
        return (t, job, Path.Combine(JobDir(t, job.Id), "output"));
    }

    [Fact]
    public async Task A_restart_resumes_from_the_newest_complete_checkpoint_on_disk_and_removes_half_written_ones()
    {
        var (t, job, output) = await CrashedWhileRunning();
        await using var _ = t;
        // The database heard of step 3, whose optimizer.bin the orphaned trainer then pruned;
        // it saved step 5 unheard of, and was killed while writing step 7.
        var known = Checkpoint(output, 3, optimizer: false);
        Sql(t, $"INSERT INTO checkpoints (id, job_id, org, step, path, created_at) VALUES ('c3', '{job.Id}', 'default', 3, '{known}', '2026-01-01T00:00:00Z')");
        var newest = Checkpoint(output, 5);
        Directory.CreateDirectory(Path.Combine(output, "checkpoints", "step-7.partial"));
        Directory.CreateDirectory(Path.Combine(output, "final.partial"));

        await t.RestartAsync();
        Assert.Equal(JobStatus.Queued, (await t.GetJobAsync(job.Id)).Status);
        var requeued = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal(EventTypes.Requeued, requeued.Type);
        Assert.Equal(5, requeued.Data!["resume_step"]!.GetValue<int>());
        Assert.Equal(newest, requeued.Data!["resume_from"]!.GetValue<string>());
        Assert.False(Directory.Exists(Path.Combine(output, "checkpoints", "step-7.partial")));
        Assert.False(Directory.Exists(Path.Combine(output, "final.partial")));
        var checkpoints = await t.Http.GetStringAsync($"learning/jobs/{job.Id}/checkpoints");
        Assert.Contains("step-5", checkpoints);
    }

    [Fact]
    public async Task A_run_that_finished_while_the_server_was_down_is_adopted_not_redone()
    {
        var (t, job, output) = await CrashedWhileRunning();
        await using var _ = t;
        Checkpoint(output, 4);
        Directory.CreateDirectory(Path.Combine(output, "final"));
        File.WriteAllText(Path.Combine(output, "final", "model.safetensors"), "weights");

        await t.RestartAsync();
        var done = await t.GetJobAsync(job.Id);
        Assert.Equal(JobStatus.Succeeded, done.Status);
        Assert.Equal($"fft:anneal/tiny-qwen3:{job.Id}", done.FineTunedModel);
        var completed = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal(EventTypes.Completed, completed.Type);
        Assert.Contains("adopted", completed.Message);
        Assert.Contains(done.FineTunedModel!, await t.Http.GetStringAsync("learning/models"));
    }

    [Fact]
    public async Task Pause_asks_the_trainer_for_a_checkpoint_first_and_the_trainer_knows_its_server()
    {
        await using var t = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.CheckpointsOnUsr1) });
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        await t.StartJobAsync(job.Id);
        var started = Path.Combine(JobDir(t, job.Id), "started");
        for (var i = 0; i < 400 && !File.Exists(started); i++) await Task.Delay(50);
        for (var i = 0; i < 100 && (await t.EventsAsync(job.Id)).All(e => e.Type != EventTypes.CheckpointSaved); i++) await Task.Delay(50);

        var paused = (await (await t.Http.PostAsync($"learning/jobs/{job.Id}/pause", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        Assert.Equal(JobStatus.Paused, paused.Status);
        var e = (await t.EventsAsync(job.Id))[^1];
        Assert.Equal("sft.paused", e.Type);
        Assert.Equal(4, e.Data!["resume_step"]!.GetValue<int>()); // the step it stopped at, not the last periodic save (3)
        Assert.Equal($"server=[{Environment.ProcessId}]", (await File.ReadAllLinesAsync(Path.Combine(JobDir(t, job.Id), "args.txt")))[2]);
    }
}
