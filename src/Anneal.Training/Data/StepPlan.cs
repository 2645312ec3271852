// The optimizer steps of one epoch, as a pure function of (example lengths, seed, epoch, batching,
// per_device_batch, gradient_accumulation_steps, sequence_length): no token is read, so a plan for
// millions of examples needs only their lengths (4 bytes each), a resumed run sees the same steps,
// and a data-parallel rank can take its share of any step.
//
// A plan is steps → micro-batches → rows → example indices (one index a row unless packed).
// Batching (Anneal.Core.Training.BatchingModes):
//   padded        shuffle; steps of B·G consecutive examples; micro-batches of B in that order.
//   token_budget  the steps of padded; each step's rows sorted longest first and cut greedily into
//                 micro-batches whose padded size (rows × first row's length) stays within
//                 B × the longest example of the data, the largest micro-batch padded could build:
//                 the same examples per step, no more memory, fewer forward passes.
//   bucketed      shuffle; sort by length within mega-batches of 64 steps; cut into steps of B·G
//                 rows and micro-batches of B; shuffle the steps.
//   packed        shuffle; lay examples end to end into rows of up to sequence_length (next fit);
//                 then as bucketed, over rows.
// The loss stays Σ token losses / trained tokens of the whole step whatever the layout.
using Anneal.Core.Training;

namespace Anneal.Training.Data;

public static class StepPlan
{
    /// <summary>Steps of epoch <paramref name="epoch"/>; lengths[i] is example i's token count.</summary>
    public static EpochPlan Epoch(IReadOnlyList<int> lengths, int seed, int epoch, string batching,
        int perDeviceBatch, int accumulation, int sequenceLength)
    {
        if (!BatchingModes.All.Contains(batching))
            throw new ArgumentException($"batching \"{batching}\" is not one of {string.Join(", ", BatchingModes.All)}", nameof(batching));
        // System.Random with a fixed seed is stable across runs (HashCode.Combine would not be).
        var rng = new Random(unchecked(seed * 1_000_003 + epoch * 7_919 + 17));
        var order = Enumerable.Range(0, lengths.Count).ToArray();
        rng.Shuffle(order);
        var rowsPerStep = perDeviceBatch * accumulation;

        if (batching is BatchingModes.Padded or BatchingModes.TokenBudget)
        {
            long budget = (long)perDeviceBatch * MaxLength(lengths);
            var plan = new EpochPlan.Builder(order.Length);
            for (var s = 0; s < order.Length; s += rowsPerStep)
            {
                var step = order.AsSpan(s, Math.Min(rowsPerStep, order.Length - s));
                plan.Add(batching == BatchingModes.Padded ? Consecutive(step, perDeviceBatch) : WithinBudget(step, lengths, budget));
            }
            return plan.Build(null);
        }

        // Rows: single examples, or examples packed end to end up to sequenceLength (next fit).
        var rows = new List<int[]>();
        if (batching != BatchingModes.Packed)
            rows.AddRange(order.Select(i => new[] { i }));
        else
        {
            var current = new List<int>();
            var used = 0;
            foreach (var i in order)
            {
                if (used + lengths[i] > sequenceLength && current.Count > 0)
                {
                    rows.Add([.. current]);
                    current.Clear();
                    used = 0;
                }
                current.Add(i);
                used += lengths[i];
            }
            if (current.Count > 0) rows.Add([.. current]);
        }

        int RowLength(int[] row) => row.Sum(i => lengths[i]);
        var mega = rowsPerStep * 64;
        var steps = new EpochPlan.Builder(lengths.Count);
        for (var m = 0; m < rows.Count; m += mega)
        {
            var chunk = rows.Skip(m).Take(mega).OrderByDescending(RowLength).ToList();
            for (var s = 0; s < chunk.Count; s += rowsPerStep)
            {
                var stepRows = chunk.Skip(s).Take(rowsPerStep).ToList();
                var micro = new List<List<int[]>>();
                for (var b = 0; b < stepRows.Count; b += perDeviceBatch)
                    micro.Add(stepRows.Skip(b).Take(perDeviceBatch).ToList());
                steps.Add(micro);
            }
        }
        // The same permutation Random.Shuffle gives over the steps themselves.
        var stepOrder = Enumerable.Range(0, steps.Count).ToArray();
        rng.Shuffle(stepOrder);
        return steps.Build(stepOrder);
    }

    /// <summary>Rows of one example each, <paramref name="perDeviceBatch"/> a micro-batch, in the given order.</summary>
    static List<List<int[]>> Consecutive(ReadOnlySpan<int> step, int perDeviceBatch)
    {
        var micros = new List<List<int[]>>((step.Length + perDeviceBatch - 1) / perDeviceBatch);
        for (var b = 0; b < step.Length; b += perDeviceBatch)
        {
            var micro = new List<int[]>(Math.Min(perDeviceBatch, step.Length - b));
            for (var k = b; k < step.Length && k < b + perDeviceBatch; k++) micro.Add([step[k]]);
            micros.Add(micro);
        }
        return micros;
    }

    /// <summary>Rows sorted longest first (ties by index), cut where the next row would exceed the padded-token budget.</summary>
    static List<List<int[]>> WithinBudget(ReadOnlySpan<int> step, IReadOnlyList<int> lengths, long budget)
    {
        var sorted = step.ToArray();
        if (sorted.Length > 1)
            Array.Sort(sorted, (a, b) => lengths[a] != lengths[b] ? lengths[b].CompareTo(lengths[a]) : a.CompareTo(b));
        var micros = new List<List<int[]>>();
        foreach (var i in sorted)
        {
            // Sorted longest first, so a micro-batch's padded size is its first row's length × rows.
            if (micros.Count == 0 || (long)(micros[^1].Count + 1) * lengths[micros[^1][0][0]] > budget)
                micros.Add([]);
            micros[^1].Add([i]);
        }
        return micros;
    }

    static int MaxLength(IReadOnlyList<int> lengths)
    {
        var max = 1;
        for (var i = 0; i < lengths.Count; i++) max = Math.Max(max, lengths[i]);
        return max;
    }

    /// <summary>Rows in a plan (one per example unless packed).</summary>
    public static int Rows(EpochPlan plan) => plan.RowCount;
}

/// <summary>
/// The steps of one epoch in flat arrays, about 4 bytes per example, row, micro-batch and step
/// (millions of examples plan in megabytes); the indexer builds one step's lists when asked.
/// </summary>
public sealed class EpochPlan : IReadOnlyList<List<List<int[]>>>
{
    readonly int[] examples, rowStart, microStart, stepStart;
    readonly int[]? order;

    EpochPlan(int[] examples, int[] rowStart, int[] microStart, int[] stepStart, int[]? order) =>
        (this.examples, this.rowStart, this.microStart, this.stepStart, this.order) = (examples, rowStart, microStart, stepStart, order);

    public int Count => stepStart.Length - 1;
    public int RowCount => rowStart.Length - 1;

    /// <summary>Micro-batches → rows → example indices of step <paramref name="index"/>.</summary>
    public List<List<int[]>> this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            var s = order?[index] ?? index;
            var micros = new List<List<int[]>>(stepStart[s + 1] - stepStart[s]);
            for (var m = stepStart[s]; m < stepStart[s + 1]; m++)
            {
                var rows = new List<int[]>(microStart[m + 1] - microStart[m]);
                for (var r = microStart[m]; r < microStart[m + 1]; r++) rows.Add(examples[rowStart[r]..rowStart[r + 1]]);
                micros.Add(rows);
            }
            return micros;
        }
    }

    public IEnumerator<List<List<int[]>>> GetEnumerator()
    {
        for (var i = 0; i < Count; i++) yield return this[i];
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Collects steps in the order they are planned; Build takes an optional permutation of them.</summary>
    public sealed class Builder(int examples)
    {
        readonly List<int> ids = new(examples), rowStart = [0], microStart = [0], stepStart = [0];

        public int Count => stepStart.Count - 1;

        public void Add(List<List<int[]>> step)
        {
            foreach (var micro in step)
            {
                foreach (var row in micro)
                {
                    ids.AddRange(row);
                    rowStart.Add(ids.Count);
                }
                microStart.Add(rowStart.Count - 1);
            }
            stepStart.Add(microStart.Count - 1);
        }

        public EpochPlan Build(int[]? order) => new([.. ids], [.. rowStart], [.. microStart], [.. stepStart], order);
    }
}
