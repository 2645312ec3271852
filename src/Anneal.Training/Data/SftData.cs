// Supervised fine-tuning data: JSONL records → token ids with a trained-token mask → batches.
//
// Batches waste as little compute on padding as possible, two ways:
//   - length bucketing (default): examples are shuffled, sorted by length within mega-batches of
//     64 optimizer steps, cut into steps, and the steps shuffled again. Rows of a micro-batch are
//     right-padded to the longest; plain causal attention (the flash kernel) stays correct since
//     padding only follows real tokens.
//   - packing: examples are laid end to end in rows of sequence_length with a block-diagonal causal
//     mask (no attention across examples) and positions restarting at 0 for each example.
//   - token budget (bucketing variant): a micro-batch takes as many length-sorted rows as fit in
//     per_device_batch × sequence_length padded tokens, so short examples make wide batches and long
//     ones narrow batches. The loss stays Σ token losses / trained tokens of the whole step.
// Every plan is a pure function of (seed, epoch): a resumed run sees the same batches.
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
    int TotalExamples = 0, int LongestTokens = 0, int MinLengthToKeepAll = 0);

/// <summary>
/// One micro-batch on the device. Targets are already shifted: Targets[b, t] is the token predicted
/// at position t (ids[b, t+1] when trained, else -100).
/// </summary>
/// <param name="Ids">(B, T) int64</param>
/// <param name="Positions">(B, T) int64</param>
/// <param name="Targets">(B, T) int64, -100 = no loss</param>
/// <param name="Mask">null for causal attention, else (B, 1, T, T) bool, true = may attend</param>
public sealed record SftBatch(Tensor Ids, Tensor Positions, Tensor Targets, Tensor? Mask, int TrainedTokens, int Tokens) : IDisposable
{
    public void Dispose()
    {
        Ids.Dispose(); Positions.Dispose(); Targets.Dispose(); Mask?.Dispose();
    }
}

public static class SftData
{
    public const long IgnoreIndex = -100;

    /// <summary>
    /// Reads and encodes a JSONL file (validated beforehand). Examples longer than sequenceLength are
    /// truncated; examples left without any trained token are dropped; both are counted separately
    /// (a dropped example is not also counted as truncated). displayName names the file in errors
    /// (the user's file name rather than a storage path).
    /// </summary>
    public static (List<SftExample> Examples, DataStats Stats) Load(
        string path, Func<JsonObject, (int[] Ids, bool[] Trained)> encode, int sequenceLength, string? displayName = null)
    {
        var examples = new List<SftExample>();
        int total = 0, truncated = 0, dropped = 0, longest = 0, keepAll = 0;
        long tokens = 0, trained = 0;
        foreach (var (line, record) in DatasetRecords.Read(path))
        {
            int[] ids; bool[] mask;
            try { (ids, mask) = encode(record); }
            catch (Tokenization.ChatRecordException e)
            {
                throw TrainerUserException.BadData($"{displayName ?? path}: Line {line}: {e.Message}");
            }
            total++;
            longest = Math.Max(longest, ids.Length);
            // Token 0 has no context to be predicted from; the first trained token at index i needs i + 1 tokens.
            var firstTrained = Array.IndexOf(mask, true, Math.Min(1, mask.Length));
            if (firstTrained > 0) keepAll = Math.Max(keepAll, firstTrained + 1);
            var cut = ids.Length > sequenceLength;
            if (cut)
            {
                ids = ids[..sequenceLength];
                mask = mask[..sequenceLength];
            }
            if (mask.Length > 0) mask[0] = false;
            var example = new SftExample(line, ids, mask);
            if (example.TrainedTokens == 0) { dropped++; continue; }
            if (cut) truncated++;
            examples.Add(example);
            tokens += ids.Length;
            trained += example.TrainedTokens;
        }
        return (examples, new DataStats(examples.Count, tokens, trained, truncated, dropped, total, longest, keepAll));
    }

    /// <summary>
    /// The optimizer steps of one epoch: each step is a list of micro-batches, each micro-batch a
    /// list of rows, each row a list of example indices (one index unless packing).
    /// </summary>
    public static List<List<List<int[]>>> PlanEpoch(IReadOnlyList<SftExample> examples, int seed, int epoch,
        int perDeviceBatch, int accumulation, int sequenceLength, bool packing, bool tokenBudget = false)
    {
        // System.Random with a fixed seed is stable across runs (HashCode.Combine would not be).
        var rng = new Random(unchecked(seed * 1_000_003 + epoch * 7_919 + 17));
        var order = Enumerable.Range(0, examples.Count).ToArray();
        rng.Shuffle(order);

        // Rows: single examples, or examples packed end to end up to sequenceLength (next fit).
        var rows = new List<int[]>();
        if (!packing)
            rows.AddRange(order.Select(i => new[] { i }));
        else
        {
            var current = new List<int>();
            var used = 0;
            foreach (var i in order)
            {
                if (used + examples[i].Length > sequenceLength && current.Count > 0)
                {
                    rows.Add([.. current]);
                    current.Clear();
                    used = 0;
                }
                current.Add(i);
                used += examples[i].Length;
            }
            if (current.Count > 0) rows.Add([.. current]);
        }

        int RowLength(int[] row) => row.Sum(i => examples[i].Length);
        var rowsPerStep = perDeviceBatch * accumulation;
        var mega = rowsPerStep * 64;
        var steps = new List<List<List<int[]>>>();
        for (var m = 0; m < rows.Count; m += mega)
        {
            var chunk = rows.Skip(m).Take(mega).OrderByDescending(RowLength).ToList();
            if (tokenBudget)
            {
                // Sorted longest first, so a micro-batch's padded size is its first row's length × rows.
                var budget = (long)perDeviceBatch * sequenceLength;
                var micros = new List<List<int[]>>();
                foreach (var row in chunk)
                {
                    if (micros.Count == 0 || (long)(micros[^1].Count + 1) * RowLength(micros[^1][0]) > budget)
                        micros.Add([]);
                    micros[^1].Add(row);
                }
                for (var s = 0; s < micros.Count; s += accumulation)
                    steps.Add(micros.Skip(s).Take(accumulation).ToList());
                continue;
            }
            for (var s = 0; s < chunk.Count; s += rowsPerStep)
            {
                var stepRows = chunk.Skip(s).Take(rowsPerStep).ToList();
                var micro = new List<List<int[]>>();
                for (var b = 0; b < stepRows.Count; b += perDeviceBatch)
                    micro.Add(stepRows.Skip(b).Take(perDeviceBatch).ToList());
                steps.Add(micro);
            }
        }
        rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(steps));
        return steps;
    }

    /// <summary>Builds the tensors of one micro-batch on `device`. padId fills padding.</summary>
    public static SftBatch Collate(IReadOnlyList<SftExample> examples, IReadOnlyList<int[]> rows, int padId, Device device)
    {
        var packed = rows.Any(r => r.Length > 1);
        var B = rows.Count;
        var T = rows.Max(r => r.Sum(i => examples[i].Length));
        var ids = new long[B * T];
        var positions = new long[B * T];
        var targets = new long[B * T];
        var segments = packed ? new int[B * T] : null;
        Array.Fill(ids, padId);
        Array.Fill(targets, IgnoreIndex);
        int trained = 0, tokens = 0;
        for (var b = 0; b < B; b++)
        {
            var offset = 0;
            var segment = 1;
            foreach (var i in rows[b])
            {
                var e = examples[i];
                for (var t = 0; t < e.Length; t++)
                {
                    var at = b * T + offset + t;
                    ids[at] = e.Ids[t];
                    positions[at] = t;
                    if (t + 1 < e.Length && e.Trained[t + 1])
                    {
                        targets[at] = e.Ids[t + 1];
                        trained++;
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

        // Host tensors are freed here; only the device copies leave the scope.
        using var scope = NewDisposeScope();
        Tensor? mask = null;
        if (segments != null)
        {
            var seg = torch.tensor(segments, dtype: ScalarType.Int32).view(B, T);
            var same = seg.unsqueeze(2).eq(seg.unsqueeze(1));                              // (B, T, T)
            var causal = torch.ones(T, T, dtype: ScalarType.Bool).tril();                    // (T, T)
            mask = (same & causal).unsqueeze(1).to(device).MoveToOuterDisposeScope();        // (B, 1, T, T)
        }
        Tensor ToDevice(long[] values) => torch.tensor(values, dtype: ScalarType.Int64).view(B, T).to(device).MoveToOuterDisposeScope();
        return new SftBatch(ToDevice(ids), ToDevice(positions), ToDevice(targets), mask, trained, tokens);
    }
}
