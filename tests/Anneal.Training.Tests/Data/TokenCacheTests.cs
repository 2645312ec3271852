// The token cache: what the parallel build writes reads back exactly as the one-thread in-memory
// loader encodes it; any change of what it is keyed by gives another file; a truncated, foreign or
// corrupt file is rebuilt, never read; and a file many times larger than a memory bound is read
// through the trainer's data path, and trained on, within the bound.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Training.Data;
using Anneal.Training.Tokenization;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Data;

// Alone, after the parallel tests: the memory tests read the whole process's resident memory.
[Collection(TorchRandomCollection.Name)]
public sealed class TokenCacheTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-cache-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    static readonly Lazy<Qwen3Tokenizer> Tokenizer = new(() => Qwen3Tokenizer.Load(TinyFixture.ModelDir));

    static (int[] Ids, bool[] Trained) Encode(JsonObject record)
    {
        var e = Qwen3ChatTemplate.Encode(Tokenizer.Value, record);
        return (e.InputIds, e.Trained);
    }

    /// <summary>600 varied conversations (more than two chunks of lines), some long enough to be truncated at 96 tokens.</summary>
    string WriteVariedSet(string name = "varied.jsonl")
    {
        var path = Path.Combine(dir, name);
        using var w = new StreamWriter(path);
        for (var i = 0; i < 600; i++)
        {
            var (q, a) = TinyFixture.Facts[i % TinyFixture.Facts.Length];
            var answer = string.Join(" ", Enumerable.Repeat(a, 1 + i % 7));
            var messages = new JsonArray
            {
                new JsonObject { ["role"] = "user", ["content"] = $"{q} (question {i})" },
                new JsonObject { ["role"] = "assistant", ["content"] = answer },
            };
            w.WriteLine(new JsonObject { ["messages"] = messages }.ToJsonString());
            if (i % 97 == 0) w.WriteLine();   // blank lines keep the numbering of the lines after them
        }
        return path;
    }

    TokenCacheKey Key(string data, int sequenceLength = 96, string? modelDir = null) =>
        new(TokenCacheKey.HashFile(data), TokenCacheKey.HashTokenizer(modelDir ?? TinyFixture.ModelDir), "test-template", sequenceLength);

    PreparedData Open(string data, TokenCacheKey key, int threads = 3) =>
        DataPreparation.Open(data, "train.jsonl", key, Path.Combine(dir, "cache"), Encode, () => { }, threads, output.WriteLine);

    [Fact]
    public void A_cache_file_reads_back_exactly_what_the_one_thread_loader_encodes()
    {
        var data = WriteVariedSet();
        var (expected, stats) = SftData.Load(data, Encode, 96);
        Assert.InRange(stats.Truncated, 1, stats.Examples - 1);

        using var cold = Open(data, Key(data));
        Assert.False(cold.CacheUsed);
        AssertSame(expected, stats, cold);

        using var warm = Open(data, Key(data));
        Assert.True(warm.CacheUsed);
        Assert.Equal(cold.Examples.Path, warm.Examples.Path);
        AssertSame(expected, stats, warm);
        output.WriteLine($"{stats.Examples} examples, {stats.Tokens} tokens; cold {cold.Seconds:F2} s, warm {warm.Seconds:F3} s");
    }

    static void AssertSame(List<SftExample> expected, DataStats stats, PreparedData data)
    {
        Assert.Equal(stats, data.Stats);
        Assert.Equal(expected.Select(e => e.Length), data.Examples.Lengths);
        Assert.Equal(expected.Count, data.Examples.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            var got = data.Examples[i];
            Assert.Equal(expected[i].Line, got.Line);
            Assert.Equal(expected[i].Ids, got.Ids);
            Assert.Equal(expected[i].Trained, got.Trained);
        }
    }

    [Fact]
    public void Every_key_input_names_another_file_and_a_changed_input_is_rebuilt()
    {
        var data = WriteVariedSet();
        var key = Key(data);
        using (var first = Open(data, key)) Assert.False(first.CacheUsed);

        // Another tokenizer: the same files with a changed chat template in tokenizer_config.json.
        var model = Path.Combine(dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(TinyFixture.ModelDir, "tokenizer*")) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        var config = Path.Combine(model, "tokenizer_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("{", "{ ", StringComparison.Ordinal));
        var changed = new[]
        {
            key with { SequenceLength = 97 },
            key with { Template = "another-template" },
            Key(data, modelDir: model),
        };
        File.AppendAllText(data, new JsonObject { ["messages"] = new JsonArray
        {
            new JsonObject { ["role"] = "user", ["content"] = "One more?" },
            new JsonObject { ["role"] = "assistant", ["content"] = "One more." },
        } }.ToJsonString() + "\n");
        var newData = Key(data);
        Assert.NotEqual(key.DatasetSha256, newData.DatasetSha256);
        Assert.NotEqual(key.TokenizerSha256, changed[2].TokenizerSha256);

        foreach (var k in changed.Append(newData))
        {
            Assert.NotEqual(key.FileName, k.FileName);
            using var rebuilt = Open(data, k);
            Assert.False(rebuilt.CacheUsed, $"{k} reused the file of {key}");
        }
        Assert.Equal(601, Open(data, newData).Stats.TotalExamples);
    }

    [Fact]
    public void Truncated_foreign_and_corrupt_cache_files_are_rebuilt_never_read()
    {
        var data = WriteVariedSet();
        var key = Key(data);
        var (expected, stats) = SftData.Load(data, Encode, 96);
        string path;
        using (var built = Open(data, key)) path = built.Examples.Path;
        var good = File.ReadAllBytes(path);

        // Another key's file under this key's name: a copy of a different build.
        var other = key with { SequenceLength = 64 };
        string otherPath;
        using (var o = Open(data, other)) otherPath = o.Examples.Path;

        var damage = new (string What, Action Damage, string Reason)[]
        {
            ("cut short", () => File.WriteAllBytes(path, good[..(good.Length - 5)]), "truncated"),
            ("header only", () => File.WriteAllBytes(path, good[..TokenCache.HeaderBytes]), "truncated"),
            ("shorter than a header", () => File.WriteAllBytes(path, good[..20]), "truncated"),
            ("not a cache file", () => File.WriteAllText(path, "{\"messages\": []}\n" + new string('x', 200)), "magic"),
            ("another key's file", () => File.Copy(otherPath, path, overwrite: true), "key mismatch"),
            ("a flipped token byte", () => { var b = (byte[])good.Clone(); b[TokenCache.HeaderBytes + 9] ^= 0x40; File.WriteAllBytes(path, b); }, "checksum"),
            ("a flipped header count", () => { var b = (byte[])good.Clone(); b[52] ^= 0x01; File.WriteAllBytes(path, b); }, "header checksum"),
        };
        foreach (var (what, damageFile, reason) in damage)
        {
            damageFile();
            using var reopened = Open(data, key);
            Assert.False(reopened.CacheUsed, $"{what}: the damaged file was used");
            Assert.NotNull(reopened.Rebuilt);
            Assert.Contains(reason, reopened.Rebuilt, StringComparison.Ordinal);
            AssertSame(expected, stats, reopened);
            Assert.Equal(good, File.ReadAllBytes(path));
            output.WriteLine($"{what}: rebuilt ({reopened.Rebuilt})");
        }
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.partial"));
    }

    [Fact]
    public void A_record_the_template_rejects_fails_with_its_line_number_from_any_chunk()
    {
        var data = WriteVariedSet();
        var lines = File.ReadAllLines(data).ToList();
        lines[450] = """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "tool_calls": "not a list"}]}""";
        File.WriteAllLines(data, lines);
        var e = Assert.Throws<TrainerUserException>(() => Open(data, Key(data)));
        output.WriteLine(e.Message);
        Assert.Equal(ErrorCodes.UserDataError, e.Code);
        Assert.StartsWith("train.jsonl: Line 451: ", e.Message);
        Assert.Empty(Directory.GetFiles(Path.Combine(dir, "cache")));
    }
}

/// <summary>
/// Memory is measured for the whole process, so this runs alone, after the parallel tests: another
/// test's allocations must not count against the data path's bound.
/// </summary>
[Collection(TorchRandomCollection.Name)]
public sealed class TokenCacheMemoryTests(ITestOutputHelper output) : IDisposable
{
    static readonly Lazy<Qwen3Tokenizer> Tokenizer = new(() => Qwen3Tokenizer.Load(TinyFixture.ModelDir));
    readonly string dir = Directory.CreateTempSubdirectory("anneal-cache-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Reading_a_file_many_times_a_memory_bound_through_the_data_path_stays_under_the_bound()
    {
        // 120 MiB of tokens written straight into a cache file (tokenizing that much text would take
        // minutes here), then read as training does: plan, prefetch, collate, hand to the device.
        const long bound = 40L << 20;
        Anneal.Training.Native.NativeLibraries.EnsureTorchLoaded();   // batches reach torch tensors
        var key = new TokenCacheKey("synthetic", "synthetic", "synthetic", 512);
        var path = Path.Combine(dir, key.FileName);
        var rng = new Random(7);
        var stats = new DataStatsBuilder();
        using (var writer = new TokenCache.Writer(path, key.Hash()))
        {
            long bytes = 0;
            for (var line = 1; bytes < 120L << 20; line++)
            {
                var n = rng.Next(32, 512);
                var ids = new int[n];
                var trained = new bool[n];
                for (var t = 0; t < n; t++) (ids[t], trained[t]) = (rng.Next(0, 1000), t > n / 2);
                var fitted = SftData.Fit(line, ids, trained, 512);
                stats.Add(fitted);
                writer.Add(fitted.Example!);
                bytes += 5L * n;
            }
            writer.Complete(stats.Build());
        }
        var size = new FileInfo(path).Length;
        Assert.True(size > 3 * bound, $"the file ({size >> 20} MiB) must be several times the bound");

        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = AnonymousBytes();
        long peak = 0;
        long tokens = 0;
        using (var file = TokenCache.TryOpen(path, key.Hash(), out var whyNot) ?? throw new InvalidOperationException(whyNot))
        {
            var plan = StepPlan.Epoch(file.Lengths, 3, 0, BatchingModes.TokenBudget, 8, 4, 512);
            using var prefetch = new BatchPrefetcher(s => plan[s], 0, plan.Count, file, 0, pin: false);
            for (var s = 0; s < plan.Count; s++)
            {
                foreach (var host in prefetch.Next())
                {
                    using var batch = host.ToDevice(TorchSharp.torch.CPU);
                    tokens += batch.Tokens;
                }
                if (s % 50 == 0) peak = Math.Max(peak, AnonymousBytes() - before);
            }
            peak = Math.Max(peak, AnonymousBytes() - before);
            Assert.Equal(file.Stats.Tokens, tokens);
        }
        output.WriteLine($"file {size >> 20} MiB, {tokens:N0} tokens read; anonymous memory grew by at most {peak >> 20} MiB (bound {bound >> 20} MiB)");
        Assert.True(peak < bound, $"anonymous memory grew by {peak >> 20} MiB reading a {size >> 20} MiB file (bound {bound >> 20} MiB)");
    }

    /// <summary>Resident anonymous memory (managed heap, native allocations) without the mapped file's page cache.</summary>
    static long AnonymousBytes()
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("RssAnon:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }

    [Fact]
    public void A_dataset_many_times_a_memory_bound_trains_within_the_bound()
    {
        // The trainer finds a cache file under the key of a small JSONL file (as if it had tokenized a
        // large one) and trains on it. A 2 MiB file first, then a 240 MiB one: the second run's growth
        // of anonymous memory over the first's is what the data costs, and must stay under the bound.
        // (Typically a few MiB; the bound leaves room for the managed heap's own growth, which varies
        // with what earlier tests left: once 59 MiB over a first run that grew by 0.)
        const long bound = 80L << 20;
        var (small, smallSize, _) = TrainOnSyntheticCache("small", 2L << 20);
        var (large, largeSize, examples) = TrainOnSyntheticCache("large", 240L << 20);
        output.WriteLine($"anonymous memory grew by {small >> 20} MiB training on {smallSize >> 20} MiB, {large >> 20} MiB on {largeSize >> 20} MiB ({examples} examples); bound on the difference {bound >> 20} MiB");
        Assert.True(largeSize > 2 * bound, $"the file ({largeSize >> 20} MiB) must be several times the bound");
        Assert.True(large - small < bound, $"training on {largeSize >> 20} MiB took {(large - small) >> 20} MiB more than on {smallSize >> 20} MiB (bound {bound >> 20} MiB)");
    }

    (long Growth, long FileBytes, int Examples) TrainOnSyntheticCache(string name, long tokenBytes)
    {
        const int sequenceLength = 256;
        var folder = Path.Combine(dir, name);
        Directory.CreateDirectory(folder);
        var data = TinyFixture.WriteChatSet(folder);
        File.AppendAllText(data, "\n");   // another file, another key
        var cache = Path.Combine(folder, "cache");
        Directory.CreateDirectory(cache);
        var key = Trainer.TokenCacheKeyFor(data, null, TinyFixture.ModelDir, sequenceLength);
        var vocabulary = Tokenizer.Value.VocabSize;
        var rng = new Random(11);
        var stats = new DataStatsBuilder();
        using (var writer = new TokenCache.Writer(Path.Combine(cache, key.FileName), key.Hash()))
        {
            long bytes = 0;
            for (var line = 1; bytes < tokenBytes; line++)
            {
                var n = rng.Next(32, sequenceLength + 1);
                var ids = new int[n];
                var trained = new bool[n];
                for (var t = 0; t < n; t++) (ids[t], trained[t]) = (rng.Next(0, vocabulary), t > n / 3);
                var fitted = SftData.Fit(line, ids, trained, sequenceLength);
                stats.Add(fitted);
                writer.Add(fitted.Example!);
                bytes += 5L * n;
            }
            writer.Complete(stats.Build());
        }

        var settings = new TrainingSettings
        {
            TotalSteps = 4, PerDeviceBatch = 2, GradientAccumulationSteps = 2, LearningRate = 1e-3, SequenceLength = sequenceLength,
        };
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = AnonymousBytes();
        long peak = 0;
        using var done = new CancellationTokenSource();
        var sampler = new Thread(() =>
        {
            do peak = Math.Max(peak, AnonymousBytes() - before);
            while (!done.Token.WaitHandle.WaitOne(20));
        });
        sampler.Start();
        var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(folder, data, settings) with { TokenCacheDir = cache });
        done.Cancel();
        sampler.Join();
        Assert.True(exit == 0, stderr);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;
        Assert.True(prepared["cache"]!["used"]!.GetValue<bool>());
        Assert.Equal(stats.Build().Examples, prepared["examples"]!.GetValue<int>());
        Assert.Equal(4, TinyFixture.Losses(events).Count);
        return (peak, new FileInfo(Path.Combine(cache, key.FileName)).Length, stats.Build().Examples);
    }
}
