// Supervised fine-tuning data: JSONL records → token ids with a trained-token mask (Fit: truncation
// and dropping) → micro-batch tensors (Collate). Which examples form a step and a micro-batch is
// StepPlan's; where the tokens live (a memory-mapped cache file) is TokenCache's.
using System.Text.Json.Nodes;
using Anneal.Core.Datasets;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Training.Data;

/// <summary>One encoded example: Trained[t] says whether token t is a training target.</summary>
public sealed record SftExample(int Line, int[] Ids, bool[] Trained)
{
    public int Length => Ids.Length;
    public int TrainedTokens => Trained.Count(x => x);
}

/// <summary>
/// What loading kept: Examples of TotalExamples records (DroppedNoTrainedTokens had no trained token
/// within sequence_length and were left out; Truncated were cut to sequence_length and kept).
/// LongestTokens is the longest record before cutting; MinLengthToKeepAll the smallest
/// sequence_length that leaves every record at least one trained token.
/// </summary>
public sealed record DataStats(int Examples, long Tokens, long TrainedTokens, int Truncated, int DroppedNoTrainedTokens,
    int TotalExamples = 0, int LongestTokens = 0, int MinLengthToKeepAll = 0)
{
    /// <summary>Tokens of every record of the file as rendered, before truncation (the file's num_tokens for this tokenizer).</summary>
    public long FileTokens { get; init; }
}

/// <summary>One record after <see cref="SftData.Fit"/>: the example (null when dropped) and what the statistics need.</summary>
public readonly record struct FittedExample(SftExample? Example, int FileTokens, int TokensToKeep, bool Truncated, int TrainedTokens);

/// <summary>Sums <see cref="FittedExample"/>s, in file order, into <see cref="DataStats"/>.</summary>
public sealed class DataStatsBuilder
{
    int total, kept, truncated, dropped, longest, keepAll;
    long tokens, trained, fileTokens;

    public void Add(FittedExample f)
    {
        total++;
        fileTokens += f.FileTokens;
        longest = Math.Max(longest, f.FileTokens);
        keepAll = Math.Max(keepAll, f.TokensToKeep);
        if (f.Example is not { } e) { dropped++; return; }
        kept++;
        if (f.Truncated) truncated++;
        tokens += e.Length;
        trained += f.TrainedTokens;
    }

    public DataStats Build() => new(kept, tokens, trained, truncated, dropped, total, longest, keepAll) { FileTokens = fileTokens };
}

/// <summary>
/// One micro-batch on the device. Targets are already shifted: Targets[b, t] is the token predicted
/// at position t (ids[b, t+1] when trained, else -100). TargetRows/RowTargets list the trained
/// positions of the flattened batch and their targets, worked out on the host, so the loss gathers
/// its rows without a nonzero() (a device → host sync per micro-batch).
/// </summary>
/// <param name="Ids">(B, T) int64</param>
/// <param name="Positions">(B, T) int64</param>
/// <param name="Targets">(B, T) int64, -100 = no loss</param>
/// <param name="Mask">null for causal attention, else (B, 1, T, T) bool, true = may attend (built on the device)</param>
/// <param name="TargetRows">(N) int64: indices into the B·T flattened positions that have a target</param>
/// <param name="RowTargets">(N) int64: the target at each of those positions</param>
public sealed record SftBatch(Tensor Ids, Tensor Positions, Tensor Targets, Tensor? Mask, int TrainedTokens, int Tokens,
    Tensor TargetRows, Tensor RowTargets) : IDisposable
{
    public void Dispose()
    {
        Ids.Dispose(); Positions.Dispose(); Targets.Dispose(); Mask?.Dispose(); TargetRows.Dispose(); RowTargets.Dispose();
    }
}

/// <summary>
/// A micro-batch in host memory (pinned when bound for CUDA), built off the training thread by the
/// prefetcher. <see cref="ToDevice"/> copies it without blocking and builds the packed mask there.
/// </summary>
public sealed class HostBatch(Tensor ids, Tensor positions, Tensor targets, Tensor? segments, Tensor targetRows, Tensor rowTargets,
    int trainedTokens, int tokens) : IDisposable
{
    public int TrainedTokens => trainedTokens;
    public int Tokens => tokens;

    /// <summary>The device batch; this host batch is consumed (disposed).</summary>
    public SftBatch ToDevice(Device device)
    {
        using var scope = NewDisposeScope();
        Tensor Move(Tensor t) => (t.device_type == device.type ? t.alias() : t.to(device, non_blocking: true)).MoveToOuterDisposeScope();
        Tensor? mask = null;
        if (segments is not null)
        {
            // (B, T) segment ids → (B, 1, T, T): same example and not in the future. Never a host tensor.
            var seg = segments.to(device, non_blocking: true);
            var T = seg.shape[1];
            var same = seg.unsqueeze(2).eq(seg.unsqueeze(1));                                     // (B, T, T)
            var causal = torch.ones(T, T, dtype: ScalarType.Bool, device: device).tril();       // (T, T)
            mask = (same & causal).unsqueeze(1).MoveToOuterDisposeScope();                       // (B, 1, T, T)
        }
        var batch = new SftBatch(Move(ids), Move(positions), Move(targets), mask, trainedTokens, tokens, Move(targetRows), Move(rowTargets));
        Dispose();
        return batch;
    }

    public void Dispose()
    {
        ids.Dispose(); positions.Dispose(); targets.Dispose(); segments?.Dispose(); targetRows.Dispose(); rowTargets.Dispose();
    }
}

public static class SftData
{
    public const long IgnoreIndex = -100;

    /// <summary>
    /// Reads and encodes a JSONL file (validated beforehand) into memory, on one thread: for tests and
    /// benchmarks. The trainer goes through <see cref="TokenCache"/> (parallel, cached, memory-mapped);
    /// both apply <see cref="Fit"/>. displayName names the file in errors.
    /// </summary>
    public static (List<SftExample> Examples, DataStats Stats) Load(
        string path, Func<JsonObject, (int[] Ids, bool[] Trained)> encode, int sequenceLength, string? displayName = null)
    {
        var examples = new List<SftExample>();
        var stats = new DataStatsBuilder();
        foreach (var (line, record) in DatasetRecords.Read(path))
        {
            int[] ids; bool[] mask;
            try { (ids, mask) = encode(record); }
            catch (Tokenization.ChatRecordException e)
            {
                throw TrainerUserException.BadData($"{displayName ?? path}: Line {line}: {e.Message}");
            }
            var fitted = Fit(line, ids, mask, sequenceLength);
            stats.Add(fitted);
            if (fitted.Example is { } example) examples.Add(example);
        }
        return (examples, stats.Build());
    }

    /// <summary>
    /// The rule that turns an encoded record into a training example: longer than sequenceLength →
    /// truncated (the head is kept); token 0 is never a target (it has no context); no trained token
    /// left → dropped (Example null; a dropped example is not also counted as truncated).
    /// </summary>
    public static FittedExample Fit(int line, int[] ids, bool[] mask, int sequenceLength)
    {
        var fileTokens = ids.Length;
        // The first trained token at index i needs i + 1 tokens.
        var firstTrained = Array.IndexOf(mask, true, Math.Min(1, mask.Length));
        var needs = firstTrained > 0 ? firstTrained + 1 : 0;
        var cut = ids.Length > sequenceLength;
        if (cut)
        {
            ids = ids[..sequenceLength];
            mask = mask[..sequenceLength];
        }
        if (mask.Length > 0) mask[0] = false;
        var example = new SftExample(line, ids, mask);
        var trained = example.TrainedTokens;
        return new FittedExample(trained == 0 ? null : example, fileTokens, needs, cut && trained > 0, trained);
    }

    /// <summary>Builds the tensors of one micro-batch on `device`. padId fills padding.</summary>
    public static SftBatch Collate(IReadOnlyList<SftExample> examples, IReadOnlyList<int[]> rows, int padId, Device device) =>
        CollateOnHost(examples, rows, padId, pin: false).ToDevice(device);

    /// <summary>
    /// Builds one micro-batch in host memory: each row holds its examples end to end (more than one
    /// only when packed, with a segment id per example), right-padded with padId to the longest row.
    /// pin: page-locked memory, so the copy to a CUDA device can run asynchronously.
    /// </summary>
    public static HostBatch CollateOnHost(IReadOnlyList<SftExample> examples, IReadOnlyList<int[]> rows, int padId, bool pin)
    {
        var packed = rows.Any(r => r.Length > 1);
        var B = rows.Count;
        var rowExamples = rows.Select(r => r.Select(i => examples[i]).ToArray()).ToArray();   // each read once (a mapped file copies)
        var T = rowExamples.Max(r => r.Sum(e => e.Length));
        var ids = new long[B * T];
        var positions = new long[B * T];
        var targets = new long[B * T];
        var segments = packed ? new int[B * T] : null;
        var targetRows = new List<long>();
        var rowTargets = new List<long>();
        Array.Fill(ids, padId);
        Array.Fill(targets, IgnoreIndex);
        int tokens = 0;
        for (var b = 0; b < B; b++)
        {
            var offset = 0;
            var segment = 1;
            foreach (var e in rowExamples[b])
            {
                for (var t = 0; t < e.Length; t++)
                {
                    var at = b * T + offset + t;
                    ids[at] = e.Ids[t];
                    positions[at] = t;
                    if (t + 1 < e.Length && e.Trained[t + 1])
                    {
                        targets[at] = e.Ids[t + 1];
                        targetRows.Add(at);
                        rowTargets.Add(e.Ids[t + 1]);
                    }
                    if (segments != null) segments[at] = segment;
                }
                offset += e.Length;
                tokens += e.Length;
                segment++;
            }
            // Padding continues the positions and forms its own segment (0), so no row of the mask is empty.
            for (var t = offset; t < T; t++) positions[b * T + t] = t - offset;
        }

        Tensor Host(Tensor t) => pin ? Pinned(t) : t;
        static Tensor Pinned(Tensor t)
        {
            var p = t.pin_memory();
            t.Dispose();
            return p;
        }
        Tensor Long(long[] values, params long[] shape) => Host(torch.tensor(values, shape, dtype: ScalarType.Int64));
        return new HostBatch(Long(ids, B, T), Long(positions, B, T), Long(targets, B, T),
            segments is null ? null : Host(torch.tensor(segments, [B, T], dtype: ScalarType.Int32)),
            Long([.. targetRows], targetRows.Count), Long([.. rowTargets], rowTargets.Count), targetRows.Count, tokens);
    }
}
