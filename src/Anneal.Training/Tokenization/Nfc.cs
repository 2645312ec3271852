// Unicode NFC (canonical decomposition, canonical ordering, canonical composition; UAX #15), the
// normalizer of Qwen's tokenizer.json. Written out because string.Normalize does nothing when the process
// runs with InvariantGlobalization (as ours do), and tokens must not depend on the machine's ICU.
// Tables: NfcData.cs (generated). Hangul syllables are decomposed and composed arithmetically.
using System.Text;

namespace Anneal.Training.Tokenization;

public static class Nfc
{
    const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7, LCount = 19, VCount = 21, TCount = 28;
    const int NCount = VCount * TCount, SCount = LCount * NCount;

    static readonly Dictionary<int, byte> Ccc = [];
    static readonly Dictionary<int, int[]> Decomposition = [];
    static readonly Dictionary<long, int> Composition = [];
    // Code points that can change under NFC (decomposable, non-zero class, or able to combine with a
    // preceding character); text without any of them is returned as is.
    static readonly HashSet<int> Unstable = [];

    static Nfc()
    {
        foreach (var item in NfcData.CombiningClasses.Split(' '))
        {
            int dash = item.IndexOf('-'), eq = item.IndexOf('=');
            int first = Convert.ToInt32(item[..dash], 16), last = Convert.ToInt32(item[(dash + 1)..eq], 16);
            byte cls = byte.Parse(item[(eq + 1)..]);
            for (int cp = first; cp <= last; cp++) { Ccc[cp] = cls; Unstable.Add(cp); }
        }
        foreach (var item in NfcData.Decompositions.Split(' '))
        {
            int sep = item.IndexOfAny([':', '!']);
            int cp = Convert.ToInt32(item[..sep], 16);
            int[] parts = item[(sep + 1)..].Split(',').Select(p => Convert.ToInt32(p, 16)).ToArray();
            Decomposition[cp] = parts;
            Unstable.Add(cp);
            if (item[sep] == ':')
            {
                Composition[Key(parts[0], parts[1])] = cp;
                Unstable.Add(parts[1]);
            }
        }
    }

    /// <summary>Unicode version of the tables (NfcData.cs); characters assigned later are left as they are.</summary>
    public static string UnicodeVersion => NfcData.UnicodeVersion;

    /// <summary>Code points the tables describe: those with a decomposition or a non-zero combining class.</summary>
    public static IEnumerable<int> CodePointsWithData => Ccc.Keys.Concat(Decomposition.Keys).Distinct().Order();

    static long Key(int a, int b) => ((long)a << 21) | (uint)b;

    static int ClassOf(int cp) => Ccc.TryGetValue(cp, out var c) ? c : 0;

    static bool MayChange(int cp) =>
        cp >= 0x300 && (Unstable.Contains(cp) || (cp >= SBase && cp < SBase + SCount) || (cp >= VBase && cp < VBase + VCount) || (cp > TBase && cp < TBase + TCount));

    /// <summary>True when NFC leaves the text unchanged (quick check: no character that could change).</summary>
    public static bool IsNormalized(ReadOnlySpan<char> s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] < 0x300) continue;
            if (Rune.DecodeFromUtf16(s[i..], out var r, out _) != System.Buffers.OperationStatus.Done) return false; // a lone surrogate: leave it to Normalize
            if (MayChange(r.Value)) return false;
            if (r.IsBmp == false) i++;
        }
        return true;
    }

    /// <summary>NFC of <paramref name="s"/>; the same instance when nothing changes. Lone surrogates become U+FFFD.</summary>
    public static string Normalize(string s)
    {
        if (IsNormalized(s)) return s;

        // Decompose fully, then put each run of non-starters in canonical (stable, by class) order.
        var cps = new List<int>(s.Length + 8);
        for (int i = 0; i < s.Length;)
        {
            int cp = Rune.TryGetRuneAt(s, i, out var r) ? r.Value : 0xFFFD;
            i += Rune.TryGetRuneAt(s, i, out r) ? r.Utf16SequenceLength : 1;
            Decompose(cp, cps);
        }
        for (int i = 1; i < cps.Count; i++)
        {
            int c = ClassOf(cps[i]);
            if (c == 0) continue;
            for (int j = i; j > 0 && ClassOf(cps[j - 1]) > c; j--) (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
        }

        // Compose: a character joins the last starter unless a character of equal or higher class sits between.
        int starter = -1, lastClass = 0, kept = 0;
        for (int i = 0; i < cps.Count; i++)
        {
            int cp = cps[i], cls = ClassOf(cp);
            if (starter >= 0 && (lastClass < cls || (lastClass == 0 && kept - 1 == starter)) && TryCompose(cps[starter], cp, out int composite))
            {
                cps[starter] = composite;
                continue;
            }
            if (cls == 0) starter = kept;
            lastClass = cls;
            cps[kept++] = cp;
        }

        var sb = new StringBuilder(kept + 4);
        for (int i = 0; i < kept; i++) sb.Append(new Rune(cps[i]).ToString());
        return sb.ToString();
    }

    static void Decompose(int cp, List<int> into)
    {
        if (cp >= SBase && cp < SBase + SCount)
        {
            int si = cp - SBase;
            into.Add(LBase + si / NCount);
            into.Add(VBase + si % NCount / TCount);
            if (si % TCount != 0) into.Add(TBase + si % TCount);
            return;
        }
        if (Decomposition.TryGetValue(cp, out var parts))
        {
            foreach (var p in parts) Decompose(p, into);
            return;
        }
        into.Add(cp);
    }

    static bool TryCompose(int a, int b, out int composite)
    {
        if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
        {
            composite = SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
            return true;
        }
        if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
        {
            composite = a + (b - TBase);
            return true;
        }
        return Composition.TryGetValue(Key(a, b), out composite);
    }
}
