// From a JSONL file to memory-mapped training examples: open the token cache file built for the
// same (dataset, tokenizer, template, sequence_length), or validate, render, tokenize and fit the
// file on all cores and write one. Tokenizing is a bounded, order-preserving pipeline: this thread
// reads lines and writes results in file order while up to 2 × threads chunks of lines are encoded
// in parallel, so memory holds a few chunks, never the dataset.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Core.Datasets;

namespace Anneal.Training.Data;

/// <summary>Examples ready for training, and how they were obtained (for sft.data.prepared).</summary>
/// <param name="CacheUsed">true when an existing cache file was read; false when it was built now.</param>
/// <param name="Rebuilt">why an existing file could not be used, or null.</param>
public sealed record PreparedData(TokenCacheFile Examples, bool CacheUsed, string? Rebuilt, double Seconds, int Threads) : IDisposable
{
    public DataStats Stats => Examples.Stats;

    public void Dispose() => Examples.Dispose();
}

public static class DataPreparation
{
    /// <summary>Lines per chunk handed to one worker: large enough to amortise scheduling, small enough to balance.</summary>
    const int ChunkLines = 256;

    /// <summary>
    /// The cache file for <paramref name="key"/> in <paramref name="cacheDir"/>, built first when absent
    /// or unusable. validate runs only before a build (a file in the cache was validated when built).
    /// A cache folder that cannot be written gets a temporary file instead, deleted once mapped.
    /// </summary>
    public static PreparedData Open(string datasetPath, string displayName, TokenCacheKey key, string cacheDir,
        Func<JsonObject, (int[] Ids, bool[] Trained)> encode, Action validate, int threads, Action<string> log)
    {
        var clock = Stopwatch.StartNew();
        var hash = key.Hash();
        var path = Path.Combine(cacheDir, key.FileName);
        if (TokenCache.TryOpen(path, hash, out var whyNot) is { } cached)
            return new PreparedData(cached, true, null, clock.Elapsed.TotalSeconds, 0);
        var rebuilt = File.Exists(path) ? whyNot : null;
        if (rebuilt != null) log($"token cache {path} is not usable ({whyNot}): rebuilding it");

        validate();
        var temporary = false;
        TokenCache.Writer writer;
        try
        {
            Directory.CreateDirectory(cacheDir);
            writer = new TokenCache.Writer(path, hash);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log($"token cache folder {cacheDir} cannot be written ({e.Message}): using a temporary file");
            path = Path.Combine(Path.GetTempPath(), $"anneal-{Environment.ProcessId}-{Guid.NewGuid():N}.tokens");
            writer = new TokenCache.Writer(path, hash);
            temporary = true;
        }
        using (writer)
        {
            var stats = Tokenize(datasetPath, displayName, encode, key.SequenceLength, threads, writer.Add);
            writer.Complete(stats);
        }
        var built = TokenCache.TryOpen(path, hash, out whyNot)
            ?? throw new IOException($"token cache {path} was written but cannot be read back: {whyNot}");
        // The map keeps the bytes of an unlinked file until it is closed.
        if (temporary) File.Delete(path);
        return new PreparedData(built, false, rebuilt, clock.Elapsed.TotalSeconds, threads);
    }

    /// <summary>
    /// Renders, tokenizes and fits every record of a validated JSONL file on <paramref name="threads"/>
    /// threads; <paramref name="add"/> receives the kept examples in file order. A record the template
    /// cannot render fails with its line number (the first such line of the file).
    /// </summary>
    public static DataStats Tokenize(string path, string displayName, Func<JsonObject, (int[] Ids, bool[] Trained)> encode,
        int sequenceLength, int threads, Action<SftExample> add)
    {
        threads = Math.Max(1, threads);
        var stats = new DataStatsBuilder();
        var pending = new Queue<Task<FittedExample[]>>();
        using var workers = new SemaphoreSlim(threads);

        void Drain()
        {
            FittedExample[] results;
            try { results = pending.Dequeue().GetAwaiter().GetResult(); }
            catch
            {
                // Let the chunks still running finish before the error leaves (they hold the tokenizer).
                try { Task.WaitAll([.. pending]); } catch (AggregateException) { }
                throw;
            }
            foreach (var f in results)
            {
                stats.Add(f);
                if (f.Example is { } e) add(e);
            }
        }

        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan))
        {
            var chunk = new List<JsonlLine>(ChunkLines);
            foreach (var line in JsonlLines.Read(stream))
            {
                if (line.IsBlank) continue;
                chunk.Add(line);
                if (chunk.Count < ChunkLines) continue;
                Start(chunk);
                chunk = new List<JsonlLine>(ChunkLines);
            }
            if (chunk.Count > 0) Start(chunk);
        }
        while (pending.Count > 0) Drain();
        return stats.Build();

        void Start(List<JsonlLine> lines)
        {
            pending.Enqueue(Task.Run(() =>
            {
                workers.Wait();
                try { return lines.Select(Encode).ToArray(); }
                finally { workers.Release(); }
            }));
            while (pending.Count >= 2 * threads) Drain();
        }

        FittedExample Encode(JsonlLine line)
        {
            var record = System.Text.Json.Nodes.JsonNode.Parse(line.Bytes) as JsonObject
                ?? throw TrainerUserException.BadData($"{displayName}: Line {line.Number}: expected a JSON object");
            int[] ids; bool[] trained;
            try { (ids, trained) = encode(DatasetRecords.Normalize(record)); }
            catch (Tokenization.ChatRecordException e)
            {
                throw TrainerUserException.BadData($"{displayName}: Line {line.Number}: {e.Message}");
            }
            return SftData.Fit(line.Number, ids, trained, sequenceLength);
        }
    }
}
