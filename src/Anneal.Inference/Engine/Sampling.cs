// Choosing the next token from one row of logits, as OpenAI-compatible servers do: temperature 0
// is greedy (argmax, first maximum: the same token torch.argmax picks); otherwise softmax(logits/T)
// restricted to the top_k most likely tokens and then to the smallest set whose probability
// reaches top_p, renormalised, and drawn with the sequence's own generator (seeded: repeatable).
namespace Anneal.Inference.Engine;

/// <param name="Temperature">0 = greedy.</param>
/// <param name="TopP">in (0, 1]; 1 = off.</param>
/// <param name="TopK">0 = off.</param>
public sealed record SamplingParams(double Temperature = 1.0, double TopP = 1.0, int TopK = 0, long? Seed = null);

public sealed class Sampler
{
    readonly SamplingParams _p;
    readonly Random _random;

    public Sampler(SamplingParams p, int choiceIndex)
    {
        _p = p;
        // Each of the n choices draws from its own seeded stream, so n > 1 gives different answers
        // that are each repeatable.
        _random = p.Seed is { } seed ? new Random(unchecked((int)(seed * 1_000_003 + choiceIndex))) : new Random();
    }

    public int Next(ReadOnlySpan<float> logits)
    {
        if (_p.Temperature <= 0) return ArgMax(logits);
        var k = _p.TopK > 0 ? Math.Min(_p.TopK, logits.Length) : logits.Length;
        // Candidates, most likely first (only sorted when top_k or top_p needs an order).
        int[] ids;
        if (k < logits.Length || _p.TopP < 1)
        {
            ids = Enumerable.Range(0, logits.Length).ToArray();
            var keys = logits.ToArray();
            Array.Sort(keys, ids, Comparer<float>.Create((a, b) => b.CompareTo(a)));
            if (k < ids.Length) ids = ids[..k];
        }
        else ids = Enumerable.Range(0, logits.Length).ToArray();

        var max = double.NegativeInfinity;
        foreach (var i in ids) max = Math.Max(max, logits[i]);
        var probs = new double[ids.Length];
        double sum = 0;
        for (var j = 0; j < ids.Length; j++) sum += probs[j] = Math.Exp((logits[ids[j]] - max) / _p.Temperature);
        var n = ids.Length;
        if (_p.TopP < 1)
        {
            double cumulative = 0;
            for (n = 0; n < ids.Length; n++)
            {
                cumulative += probs[n] / sum;
                if (cumulative >= _p.TopP) { n++; break; }
            }
            n = Math.Clamp(n, 1, ids.Length);
            sum = probs.AsSpan(0, n).ToArray().Sum();
        }
        var u = _random.NextDouble() * sum;
        for (var j = 0; j < n; j++)
        {
            u -= probs[j];
            if (u < 0) return ids[j];
        }
        return ids[n - 1];
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
}
