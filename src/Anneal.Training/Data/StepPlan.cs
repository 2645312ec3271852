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
    public static List<List<List<int[]>>> Epoch(IReadOnlyList<int> lengths, int seed, int epoch, string batching,
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
            var plan = new List<List<List<int[]>>>();
            for (var s = 0; s < order.Length; s += rowsPerStep)
            {
                var step = order.AsSpan(s, Math.Min(rowsPerStep, order.Length - s)).ToArray();
                plan.Add(batching == BatchingModes.Padded ? Consecutive(step, perDeviceBatch) : WithinBudget(step, lengths, budget));
            }
            return plan;
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
        var steps = new List<List<List<int[]>>>();
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
        rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(steps));
        return steps;
    }

    /// <summary>Rows of one example each, <paramref name="perDeviceBatch"/> a micro-batch, in the given order.</summary>
    static List<List<int[]>> Consecutive(int[] step, int perDeviceBatch)
    {
        var micros = new List<List<int[]>>();
        for (var b = 0; b < step.Length; b += perDeviceBatch)
            micros.Add(step.Skip(b).Take(perDeviceBatch).Select(i => new[] { i }).ToList());
        return micros;
    }

    /// <summary>Rows sorted longest first (ties by index), cut where the next row would exceed the padded-token budget.</summary>
    static List<List<int[]>> WithinBudget(int[] step, IReadOnlyList<int> lengths, long budget)
    {
        var micros = new List<List<int[]>>();
        foreach (var i in step.OrderByDescending(i => lengths[i]).ThenBy(i => i))
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

    /// <summary>The planned steps of an epoch, as (micro-batches, rows) counts; the memory model and events use them.</summary>
    public static int Rows(List<List<List<int[]>>> plan) => plan.Sum(step => step.Sum(micro => micro.Count));
}
