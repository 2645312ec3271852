// "Did you mean ...?" for unknown names (config keys, hyperparameters, roles, module names):
// the closest candidate by Levenshtein distance, case-insensitive, when it is close enough to be
// a plausible typo (distance ≤ max(2, length / 3)).
namespace Anneal.Core;

public static class Suggest
{
    /// <summary>The candidate closest to <paramref name="input"/>, or null when none is close.</summary>
    public static string? Closest(string input, IEnumerable<string> candidates)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var candidate in candidates)
        {
            var d = Distance(input.ToLowerInvariant(), candidate.ToLowerInvariant());
            if (d < bestDistance)
            {
                best = candidate;
                bestDistance = d;
            }
        }
        var limit = Math.Max(2, input.Length / 3);
        return best is not null && bestDistance <= limit ? best : null;
    }

    /// <summary>"; did you mean 'x'?" or "" — ready to append to an error message.</summary>
    public static string DidYouMean(string input, IEnumerable<string> candidates) =>
        Closest(input, candidates) is { } c ? $"; did you mean '{c}'?" : "";

    /// <summary>Levenshtein distance (insert, delete, substitute each cost 1), two rows of memory.</summary>
    public static int Distance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) previous[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}
