// Builds the micro-batches of the coming optimizer steps on a background thread while the device
// trains on the current one: examples are copied out of the memory-mapped cache, collated into
// host tensors (page-locked when bound for CUDA, so the copy runs without blocking), and handed
// over through a bounded queue of `depth` steps, which caps the host memory spent on batches.
using System.Collections.Concurrent;

namespace Anneal.Training.Data;

public sealed class BatchPrefetcher : IDisposable
{
    readonly BlockingCollection<List<HostBatch>> ready;
    readonly CancellationTokenSource stop = new();
    readonly Thread thread;
    Exception? failure;

    /// <param name="stepRows">the micro-batches (rows of example indices) of 0-based optimizer step s</param>
    /// <param name="from">first step to build (0-based)</param>
    /// <param name="to">one past the last step to build</param>
    public BatchPrefetcher(Func<int, List<List<int[]>>> stepRows, int from, int to, IReadOnlyList<SftExample> examples, int padId,
        bool pin, int depth = 2)
    {
        ready = new BlockingCollection<List<HostBatch>>(Math.Max(1, depth));
        thread = new Thread(() =>
        {
            try
            {
                for (var s = from; s < to; s++)
                {
                    var batches = stepRows(s).Select(rows => SftData.CollateOnHost(examples, rows, padId, pin)).ToList();
                    try { ready.Add(batches, stop.Token); }
                    catch (OperationCanceledException)
                    {
                        batches.ForEach(b => b.Dispose());
                        return;
                    }
                }
            }
            catch (Exception e) { failure = e; }
            finally { ready.CompleteAdding(); }
        }) { IsBackground = true, Name = "batch prefetch" };
        thread.Start();
    }

    /// <summary>The next step's host batches (the caller disposes them, or moves them to the device).</summary>
    public List<HostBatch> Next()
    {
        if (ready.TryTake(out var batches, Timeout.Infinite)) return batches;
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        throw new InvalidOperationException("the batch prefetcher has no more steps");
    }

    public void Dispose()
    {
        stop.Cancel();
        thread.Join();
        while (ready.TryTake(out var batches)) batches.ForEach(b => b.Dispose());
        ready.Dispose();
        stop.Dispose();
    }
}
