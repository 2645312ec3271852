// How a generated answer is scored against a reference answer (`expected` in the prompts file):
//   1.0  when both are equal after trimming and collapsing whitespace runs to one space (case kept);
//   else the token-overlap F1 in [0, 1]: tokens are lower-cased runs of letters/digits, overlap is
//        counted as a multiset, F1 = 2·P·R / (P + R) with P = overlap / |answer|, R = overlap / |expected|
//        (the SQuAD-style F1, without its English-only article removal).
//   null when there is no reference answer.
// A Qwen3 reasoning block (`<think>…</think>`) at the start of the answer is not scored.
using System.Text;

namespace Anneal.Core.Traces;

public static class TraceScoring
{
    public static double? Score(string completion, string? expected)
    {
        if (expected is null) return null;
        var answer = WithoutReasoning(completion);
        if (NormalizeWhitespace(answer) == NormalizeWhitespace(expected)) return 1.0;
        return TokenF1(answer, expected);
    }

    /// <summary>Trimmed, with every run of whitespace replaced by one space.</summary>
    public static string NormalizeWhitespace(string s)
    {
        var sb = new StringBuilder(s.Length);
        var space = false;
        foreach (var c in s.Trim())
        {
            if (char.IsWhiteSpace(c)) { space = true; continue; }
            if (space) sb.Append(' ');
            space = false;
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>Lower-cased runs of letters and digits: "Paris, France." → ["paris", "france"].</summary>
    public static List<string> Tokens(string s)
    {
        var tokens = new List<string>();
        var current = new StringBuilder();
        foreach (var c in s)
        {
            if (char.IsLetterOrDigit(c)) current.Append(char.ToLowerInvariant(c));
            else if (current.Length > 0) { tokens.Add(current.ToString()); current.Clear(); }
        }
        if (current.Length > 0) tokens.Add(current.ToString());
        return tokens;
    }

    public static double TokenF1(string answer, string expected)
    {
        var a = Tokens(answer);
        var e = Tokens(expected);
        if (a.Count == 0 || e.Count == 0) return 0.0;
        var remaining = e.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        var overlap = 0;
        foreach (var t in a)
            if (remaining.TryGetValue(t, out var n) && n > 0)
            {
                remaining[t] = n - 1;
                overlap++;
            }
        if (overlap == 0) return 0.0;
        var precision = (double)overlap / a.Count;
        var recall = (double)overlap / e.Count;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>The text after a leading `<think>…</think>` block (the whole text when there is none).</summary>
    public static string WithoutReasoning(string completion)
    {
        var trimmed = completion.TrimStart();
        if (!trimmed.StartsWith("<think>", StringComparison.Ordinal)) return completion;
        var end = trimmed.IndexOf("</think>", StringComparison.Ordinal);
        return end < 0 ? "" : trimmed[(end + "</think>".Length)..];
    }
}
