// Never a hang: every collective runs under a deadline. A rank that died (or took another path)
// leaves the others blocked inside a collective; when one call has waited longer than the timeout,
// the watchdog says which call on which rank, aborts the communicator (MPI_Abort ends every rank
// through mpirun; ncclCommAbort unblocks the stream) and, should that not end the process within a
// grace period, exits it. A rank killed outright is noticed sooner by its launcher: mpirun ends
// the whole world as soon as one rank exits abnormally.
// The timeout must exceed the longest stretch one rank works alone between collectives (a
// checkpoint save, a validation pass): ANNEAL_COLLECTIVE_TIMEOUT_S, default 1800 s.
using System.Diagnostics;
using static TorchSharp.torch;

namespace Anneal.Training.Distributed;

public sealed class Watchdog : ICollectives
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(30);
    static readonly TimeSpan Grace = TimeSpan.FromSeconds(10);

    readonly ICollectives inner;
    readonly TimeSpan timeout;
    readonly Action<string> log;
    readonly Action afterAbort;
    readonly Thread thread;
    readonly CancellationTokenSource stop = new();
    readonly Lock gate = new();
    string? current;
    long startedTicks;

    public int Rank => inner.Rank;
    public int Size => inner.Size;
    public string Backend => inner.Backend;

    /// <param name="afterAbort">Runs after the abort (default: wait a grace period, then exit the process).</param>
    public Watchdog(ICollectives inner, TimeSpan timeout, Action<string> log, Action? afterAbort = null)
    {
        (this.inner, this.timeout, this.log) = (inner, timeout, log);
        this.afterAbort = afterAbort ?? (() =>
        {
            Thread.Sleep(Grace);
            Environment.Exit(TrainerProcess.ExitFailed);
        });
        thread = new Thread(Watch) { IsBackground = true, Name = "collective-watchdog" };
        thread.Start();
    }

    public void AllReduceSum(Tensor buffer) => Timed("all-reduce", () => inner.AllReduceSum(buffer));
    public void ReduceScatterSum(Tensor buffer) => Timed("reduce-scatter", () => inner.ReduceScatterSum(buffer));
    public void AllGather(Tensor buffer) => Timed("all-gather", () => inner.AllGather(buffer));
    public void Broadcast(Tensor buffer, int root = 0) => Timed("broadcast", () => inner.Broadcast(buffer, root));
    public void Barrier() => Timed("barrier", inner.Barrier);
    public void Abort(string reason) => inner.Abort(reason);

    void Timed(string name, Action call)
    {
        lock (gate) (current, startedTicks) = (name, Stopwatch.GetTimestamp());
        try { call(); }
        finally { lock (gate) current = null; }
    }

    void Watch()
    {
        while (!stop.Token.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 10, 50, 1000))))
        {
            string? name;
            TimeSpan waited;
            lock (gate) (name, waited) = (current, Stopwatch.GetElapsedTime(startedTicks));
            if (name is null || waited < timeout) continue;
            var reason = $"rank {Rank} of {Size}: {inner.Backend} {name} has waited {waited.TotalSeconds:F0} s (timeout {timeout.TotalSeconds:F0} s): " +
                         "another rank has died or stopped calling collectives; aborting every rank";
            log(reason);
            try { inner.Abort(reason); }
            finally { afterAbort(); }
            return;
        }
    }

    public void Dispose()
    {
        stop.Cancel();
        inner.Dispose();
    }
}
