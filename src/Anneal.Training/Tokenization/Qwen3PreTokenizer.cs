// Qwen's pre-tokenizer: splits text into the pieces that BPE then encodes one by one.
// The pattern in Qwen's tokenizer.json (pre_tokenizer.pretokenizers[0].pattern.Regex) is
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with behaviour "Isolated" (every match is its own piece). It is hand-compiled here into a scanner over
// code points rather than run through .NET Regex, because .NET Regex classifies UTF-16 code units: a letter
// outside the BMP (CJK Extension B, mathematical letters) is two surrogates, neither of which is \p{L}, and
// the split would differ from the reference (Rust regex and JavaScript both work on code points).
// Every code point is a letter, a number, whitespace or "other", so every position starts some match and
// the pieces tile the text.
using System.Buffers;
using System.Globalization;
using System.Text;

namespace Anneal.Training.Tokenization;

public static class Qwen3PreTokenizer
{
    /// <summary>The pattern this scanner implements; loading a tokenizer.json with another pattern is refused.</summary>
    public const string Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Appends (start, length) in UTF-16 units of each piece of <paramref name="text"/>.</summary>
    public static void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> pieces)
    {
        int i = 0;
        while (i < text.Length)
        {
            int end = MatchAt(text, i);
            pieces.Add((i, end - i));
            i = end;
        }
    }

    public static List<string> Split(string text)
    {
        var spans = new List<(int Start, int Length)>();
        Split(text, spans);
        return spans.Select(s => text.Substring(s.Start, s.Length)).ToList();
    }

    enum Kind { Letter, Number, Space, Other }

    // ASCII kinds by table: most text is ASCII, and this is called several times per character.
    static readonly Kind[] AsciiKinds = Enumerable.Range(0, 128).Select(c =>
        char.IsAsciiLetter((char)c) ? Kind.Letter : char.IsAsciiDigit((char)c) ? Kind.Number :
        char.IsWhiteSpace((char)c) ? Kind.Space : Kind.Other).ToArray();

    static Kind KindAt(ReadOnlySpan<char> s, int i, out int width)
    {
        char c = s[i];
        if (c < 128) { width = 1; return AsciiKinds[c]; }
        if (Rune.DecodeFromUtf16(s[i..], out Rune r, out width) != OperationStatus.Done) { width = 1; return Kind.Other; }
        if (Rune.IsWhiteSpace(r)) return Kind.Space;
        switch (Rune.GetUnicodeCategory(r))
        {
            case UnicodeCategory.UppercaseLetter: case UnicodeCategory.LowercaseLetter: case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter: case UnicodeCategory.OtherLetter:
                return Kind.Letter;
            case UnicodeCategory.DecimalDigitNumber: case UnicodeCategory.LetterNumber: case UnicodeCategory.OtherNumber:
                return Kind.Number;
            default:
                return Kind.Other;
        }
    }

    static bool IsNewline(char c) => c == '\r' || c == '\n';

    /// <summary>End (exclusive) of the match starting at <paramref name="i"/>; the alternatives are tried in pattern order.</summary>
    static int MatchAt(ReadOnlySpan<char> s, int i)
    {
        // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d). Case-insensitive matching also folds U+017F (long s) to s.
        if (s[i] == '\'' && i + 1 < s.Length)
        {
            char a = char.ToLowerInvariant(s[i + 1]);
            char b = i + 2 < s.Length ? char.ToLowerInvariant(s[i + 2]) : '\0';
            if (a == 's' || a == '\u017f' || a == 't' || a == 'm' || a == 'd') return i + 2;
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }

        var kind = KindAt(s, i, out int w);

        // 2. [^\r\n\p{L}\p{N}]?\p{L}+
        if (kind == Kind.Letter) return LettersFrom(s, i);
        if (kind != Kind.Number && !IsNewline(s[i]) && i + w < s.Length && KindAt(s, i + w, out _) == Kind.Letter)
            return LettersFrom(s, i + w);

        // 3. \p{N}: one number at a time, so "2024" is four pieces.
        if (kind == Kind.Number) return i + w;

        // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        int j = -1;
        if (kind == Kind.Other) j = i;
        else if (s[i] == ' ' && i + 1 < s.Length && KindAt(s, i + 1, out _) == Kind.Other) j = i + 1;
        if (j >= 0)
        {
            while (j < s.Length && KindAt(s, j, out int ow) == Kind.Other) j += ow;
            while (j < s.Length && IsNewline(s[j])) j++;
            return j;
        }

        // Only whitespace is left (kind == Space). Whitespace is always one UTF-16 unit.
        int runEnd = i;
        while (runEnd < s.Length && KindAt(s, runEnd, out _) == Kind.Space) runEnd++;

        // 5. \s*[\r\n]+: the run up to and including its last newline.
        for (int k = runEnd - 1; k >= i; k--)
            if (IsNewline(s[k])) return k + 1;

        // 6. \s+(?!\S): the whole run at the end of the text, else all but its last space (which then
        //    joins the following word through alternative 2 or 4).
        if (runEnd == s.Length) return runEnd;
        if (runEnd - 1 > i) return runEnd - 1;

        // 7. \s+
        return runEnd;
    }

    static int LettersFrom(ReadOnlySpan<char> s, int i)
    {
        while (i < s.Length && KindAt(s, i, out int w) == Kind.Letter) i += w;
        return i;
    }
}
