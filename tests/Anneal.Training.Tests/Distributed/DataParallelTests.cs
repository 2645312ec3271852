// N CPU ranks (Open MPI) against one process training the same global batch with N× the gradient
// accumulation: the same losses and the same final weights, for full fine-tuning with replicated
// optimizer state (DDP), with sharded state (ZeRO-1), and for LoRA. Also: a killed rank ends the
// job promptly, a stuck collective is aborted by the watchdog, resume on another world size is refused.
using System.Diagnostics;
using System.Text.RegularExpressions;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Distributed;
using Anneal.Training.Model;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Distributed;

[Collection(TorchRandomCollection.Name)]
public sealed partial class DataParallelTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-ranks-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static TrainingSettings Settings(string mode, int accumulation) => new()
    {
        Mode = mode, TotalSteps = 3, PerDeviceBatch = 2, GradientAccumulationSteps = accumulation, LearningRate = 2e-3,
        WarmupRatio = 0, LrScheduler = "linear", WeightDecay = 0.01, MaxGradNorm = 0.5, Seed = 5, SaveSteps = 2,
        Lora = new LoraSettings(R: 4, Alpha: 8, Dropout: 0),
    };

    // 16 examples; a global step is ranks × 2 rows, so with 3 ranks the epoch's last step (4 rows)
    // leaves the third rank without a micro-batch: it still takes part in the step.
    // Every mode at 2 and 3 ranks: full fine-tuning with replicated optimizer state (ANNEAL_ZERO1=off)
    // and with ZeRO-1 (sharded state), LoRA; QLoRA at 2 ranks (every rank quantises the same base).
    [MpiTheory]
    [InlineData(TrainingModes.FullFinetune, 2, "off")]
    [InlineData(TrainingModes.FullFinetune, 3, "off")]
    [InlineData(TrainingModes.FullFinetune, 2, "on")]
    [InlineData(TrainingModes.FullFinetune, 3, "on")]
    [InlineData(TrainingModes.Lora, 2, "off")]
    [InlineData(TrainingModes.Lora, 3, "off")]
    [InlineData(TrainingModes.Qlora, 2, "off")]
    public void Ranks_train_like_one_process_with_the_same_global_batch(string mode, int ranks, string zero1)
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2);
        var single = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "single"), data, Settings(mode, ranks)));
        Assert.True(single.Exit == 0, single.Stderr);

        var spec = TinyFixture.Spec(Path.Combine(dir, "ranks"), data, Settings(mode, 1));
        var run = MpiRanks.Run(ranks, spec, new Dictionary<string, string> { [RankLaunch.Zero1Variable] = zero1 });
        output.WriteLine($"{ranks} ranks in {run.Elapsed.TotalSeconds:F1} s\n{run.Stderr}");
        Assert.True(run.Exit == 0, run.Stderr);
        Assert.Contains(zero1 == "on" && mode == TrainingModes.FullFinetune ? "optimizer state sharded (ZeRO-1)" : "optimizer state replicated", run.Stderr);

        // Rank 0 alone reports: one progress event per step, one completion.
        var expected = TinyFixture.Losses(single.Events);
        var losses = TinyFixture.Losses(run.Events);
        output.WriteLine($"single: {string.Join(" ", expected)}\nranks:  {string.Join(" ", losses)}");
        Assert.Equal(3, losses.Count);
        Assert.Single(run.Events, e => e.Type == EventTypes.Completed);
        for (var i = 0; i < expected.Count; i++) Assert.Equal(expected[i], losses[i], 1e-5);
        Assert.Equal(Tokens(single.Events), Tokens(run.Events));

        var file = mode == TrainingModes.FullFinetune ? ModelFolder.WeightsFile : Lora.AdapterWeightsFile;
        var a = SafetensorsSet.OpenFolder(Path.Combine(dir, "single", "out", "final"), file);
        var b = SafetensorsSet.OpenFolder(Path.Combine(dir, "ranks", "out", "final"), file);
        Assert.Equal(a.Names.Order(), b.Names.Order());
        var worst = a.Names.Max(n =>
        {
            using var x = a.Read(n, ScalarType.Float32);
            using var y = b.Read(n, ScalarType.Float32);
            return (x - y).abs().max().item<float>();
        });
        output.WriteLine($"max |Δw| = {worst:E2}");
        Assert.True(worst < 2e-5, $"final weights differ by up to {worst}");

        // The checkpoint records the world size; resuming it on another one is refused, by name.
        var checkpoint = Path.Combine(dir, "ranks", "out", "checkpoints", "step-2");
        Assert.Equal(ranks, TrainingCheckpoint.ReadState(checkpoint).WorldSize);
        if (zero1 == "on" && mode == TrainingModes.FullFinetune && ranks == 3)
        {
            // (2 ranks: A_rank_killed_after_a_checkpoint_resumes_on_the_same_curve.)
            // Resumed on the same ranks, the sharded optimizer state (gathered into one file, split again
            // on load) continues the same curve to the same weights.
            var again = MpiRanks.Run(ranks, TinyFixture.Spec(Path.Combine(dir, "again"), data, Settings(mode, 1), resumeFrom: checkpoint));
            Assert.True(again.Exit == 0, again.Stderr);
            Assert.Equal(losses[2], Assert.Single(TinyFixture.Losses(again.Events)), 1e-6);
            var c = SafetensorsSet.OpenFolder(Path.Combine(dir, "again", "out", "final"), file);
            Assert.Equal(0f, b.Names.Max(n =>
            {
                using var x = b.Read(n, ScalarType.Float32);
                using var y = c.Read(n, ScalarType.Float32);
                return (x - y).abs().max().item<float>();
            }));
        }
        var resumed = TinyFixture.Run(TinyFixture.Spec(Path.Combine(dir, "resumed"), data, Settings(mode, 1), resumeFrom: checkpoint));
        Assert.Equal(TrainerProcess.ExitUserError, resumed.Exit);
        Assert.Contains($"trained on {ranks} rank(s) and this job runs on 1", resumed.Events.Single(e => e.Type == EventTypes.Failed).Message);
    }

    static long Tokens(List<TrainerEvent> events) => events.Single(e => e.Type == EventTypes.Completed).Data!["trained_tokens"]!.GetValue<long>();

    [MpiFact]
    public void A_killed_rank_ends_every_rank_without_a_hang()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2);
        var settings = Settings(TrainingModes.FullFinetune, 1) with { TotalSteps = 100_000, SaveSteps = null };
        using var p = MpiRanks.Start(2, TinyFixture.Spec(Path.Combine(dir, "killed"), data, settings));
        var stderr = new System.Text.StringBuilder();
        int? victim = null;
        var stepped = new ManualResetEventSlim();
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.AppendLine(e.Data);
            if (RankOnePid().Match(e.Data) is { Success: true } m) victim = int.Parse(m.Groups[1].Value);
        };
        p.OutputDataReceived += (_, e) => { if (e.Data?.Contains(EventTypes.Progress, StringComparison.Ordinal) == true) stepped.Set(); };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        try
        {
            Assert.True(stepped.Wait(TimeSpan.FromSeconds(120)), "no training step within 120 s:\n" + stderr);
            Assert.NotNull(victim);
            var clock = Stopwatch.StartNew();
            Process.GetProcessById(victim!.Value).Kill();   // SIGKILL: no goodbye from rank 1
            var ended = p.WaitForExit(TimeSpan.FromSeconds(30));
            output.WriteLine($"mpirun ended {clock.Elapsed.TotalSeconds:F1} s after rank 1 was killed\n{stderr}");
            Assert.True(ended, "rank 0 was still running 30 s after rank 1 died");
            Assert.NotEqual(0, p.ExitCode);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    // A crash, then a resume: 2 ranks with ZeRO-1 save every 2 steps; once a checkpoint is complete
    // (its checkpoint.saved event) rank 1 is SIGKILLed. Resumed on 2 ranks from the last complete
    // checkpoint, the job gives the losses and final weights of the same job never interrupted. The
    // learning rate is constant, so the killed job may run long (it is killed well before its end)
    // and the resumed and uninterrupted jobs stop 3 steps after the checkpoint.
    [MpiFact]
    public void A_rank_killed_after_a_checkpoint_resumes_on_the_same_curve()
    {
        var data = TinyFixture.WriteChatSet(dir, repeat: 2);
        var settings = Settings(TrainingModes.FullFinetune, 1) with { LrScheduler = "constant", TotalSteps = 100_000, SaveSteps = 2 };
        var stdout = new List<string>();
        var stderr = new System.Text.StringBuilder();
        int? victim = null;
        var saved = new ManualResetEventSlim();
        using (var p = MpiRanks.Start(2, TinyFixture.Spec(Path.Combine(dir, "killed"), data, settings)))
        {
            p.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (stderr) stderr.AppendLine(e.Data);
                if (RankOnePid().Match(e.Data) is { Success: true } m) victim = int.Parse(m.Groups[1].Value);
            };
            p.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (stdout) stdout.Add(e.Data);
                if (e.Data.Contains(EventTypes.CheckpointSaved, StringComparison.Ordinal)) saved.Set();
            };
            p.BeginErrorReadLine();
            p.BeginOutputReadLine();
            try
            {
                Assert.True(saved.Wait(TimeSpan.FromSeconds(120)), "no checkpoint within 120 s:\n" + stderr);
                Assert.NotNull(victim);
                Process.GetProcessById(victim!.Value).Kill();   // SIGKILL
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), "rank 0 was still running 30 s after rank 1 died");
                p.WaitForExit();   // the output is read to its end
                Assert.NotEqual(0, p.ExitCode);
            }
            finally
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
            }
        }
        List<TrainerEvent> killed;
        lock (stdout) killed = MpiRanks.ParseEvents(string.Join('\n', stdout));
        Assert.DoesNotContain(killed, e => e.Type == EventTypes.Completed);
        // The last checkpoint the job reported is complete (it is reported once its folder is renamed into place).
        var checkpoint = EventData.Read<CheckpointSavedData>(killed.Last(e => e.Type == EventTypes.CheckpointSaved).Data)!;
        var at = (int)checkpoint.Step;
        output.WriteLine($"killed after step {TinyFixture.Losses(killed).Count}; resuming from {checkpoint.Path}");

        var uninterrupted = settings with { TotalSteps = at + 3 };
        var whole = MpiRanks.Run(2, TinyFixture.Spec(Path.Combine(dir, "whole"), data, uninterrupted));
        Assert.True(whole.Exit == 0, whole.Stderr);
        var resumed = MpiRanks.Run(2, TinyFixture.Spec(Path.Combine(dir, "resumed"), data, uninterrupted, resumeFrom: checkpoint.Path));
        output.WriteLine($"resumed 3 steps on 2 ranks in {resumed.Elapsed.TotalSeconds:F1} s");
        Assert.True(resumed.Exit == 0, resumed.Stderr);
        Assert.Contains($"resumed from {checkpoint.Path} at step {at}", resumed.Stderr + string.Join("\n", resumed.Events.Select(e => e.Message)));

        var expected = TinyFixture.Losses(whole.Events);
        var before = TinyFixture.Losses(killed);
        var after = TinyFixture.Losses(resumed.Events);
        output.WriteLine($"whole:   {string.Join(" ", expected)}\nkilled:  {string.Join(" ", before)}\nresumed: {string.Join(" ", after)}");
        Assert.Equal(at + 3, expected.Count);
        Assert.Equal(3, after.Count);
        for (var i = 0; i < at; i++) Assert.Equal(expected[i], before[i], 1e-5);
        for (var i = 0; i < 3; i++) Assert.Equal(expected[at + i], after[i], 1e-5);
        var worst = MaxWeightDiff(Path.Combine(dir, "whole", "out", "final"), Path.Combine(dir, "resumed", "out", "final"), ModelFolder.WeightsFile);
        output.WriteLine($"max |Δw| = {worst:E2}");
        Assert.True(worst < 2e-5, $"final weights differ by up to {worst}");
    }

    static float MaxWeightDiff(string folderA, string folderB, string file)
    {
        var a = SafetensorsSet.OpenFolder(folderA, file);
        var b = SafetensorsSet.OpenFolder(folderB, file);
        Assert.Equal(a.Names.Order(), b.Names.Order());
        return a.Names.Max(n =>
        {
            using var x = a.Read(n, ScalarType.Float32);
            using var y = b.Read(n, ScalarType.Float32);
            return (x - y).abs().max().item<float>();
        });
    }

    [GeneratedRegex(@"^rank 1: rank 1 of 2 \(local rank 1, pid (\d+)\)")]
    private static partial Regex RankOnePid();

    [Fact]
    public void The_watchdog_aborts_a_collective_that_never_completes()
    {
        using var stuck = new StuckCollectives();
        var logged = new List<string>();
        var done = new ManualResetEventSlim();
        using var watched = new Watchdog(stuck, TimeSpan.FromMilliseconds(200), l => { lock (logged) logged.Add(l); }, done.Set);
        using var buffer = zeros(4);
        var e = Assert.Throws<InvalidOperationException>(() => watched.AllReduceSum(buffer));
        Assert.True(done.Wait(TimeSpan.FromSeconds(10)));
        Assert.Contains("aborted", e.Message);
        Assert.Contains(logged, l => l.Contains("rank 1 of 2: fake all-reduce has waited", StringComparison.Ordinal) && l.Contains("aborting every rank", StringComparison.Ordinal));
    }

    /// <summary>A peer that never answers, until aborted.</summary>
    sealed class StuckCollectives : ICollectives
    {
        readonly ManualResetEventSlim aborted = new();
        public int Rank => 1;
        public int Size => 2;
        public string Backend => "fake";
        void Wait() { aborted.Wait(); throw new InvalidOperationException("communicator aborted"); }
        public void AllReduceSum(Tensor buffer) => Wait();
        public void ReduceScatterSum(Tensor buffer) => Wait();
        public void AllGather(Tensor buffer) => Wait();
        public void Broadcast(Tensor buffer, int root = 0) => Wait();
        public void Barrier() => Wait();
        public void Abort(string reason) => aborted.Set();
        public void Dispose() => aborted.Dispose();
    }

    [Fact]
    public void Ranks_come_from_the_launch_environment()
    {
        Assert.Equal((0, 1, 0), RankLaunch.FromEnvironment(_ => null));
        var mpi = new Dictionary<string, string> { ["OMPI_COMM_WORLD_RANK"] = "2", ["OMPI_COMM_WORLD_SIZE"] = "4", ["OMPI_COMM_WORLD_LOCAL_RANK"] = "2" };
        Assert.Equal((2, 4, 2), RankLaunch.FromEnvironment(mpi.GetValueOrDefault));
        var own = new Dictionary<string, string>(mpi) { ["ANNEAL_RANK"] = "1", ["ANNEAL_WORLD_SIZE"] = "2", ["ANNEAL_LOCAL_RANK"] = "0" };
        Assert.Equal((1, 2, 0), RankLaunch.FromEnvironment(own.GetValueOrDefault));
        var bad = new Dictionary<string, string> { ["ANNEAL_RANK"] = "3", ["ANNEAL_WORLD_SIZE"] = "2" };
        Assert.Contains("rank 3 of world size 2", Assert.Throws<InvalidOperationException>(() => RankLaunch.FromEnvironment(bad.GetValueOrDefault)).Message);
    }
}
