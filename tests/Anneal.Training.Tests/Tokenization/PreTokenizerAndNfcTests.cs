// The hand-written splitter against .NET's Regex running Qwen's own pattern (identical on BMP text, where
// UTF-16 units are code points), and NFC against Node's String.prototype.normalize.
using System.Text.Json;
using System.Text.RegularExpressions;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Tokenization;

public class PreTokenizerAndNfcTests
{
    static readonly Regex QwenRegex = new(Qwen3PreTokenizer.Pattern, RegexOptions.CultureInvariant);

    static bool IsBmp(string s) => !s.Any(char.IsSurrogate);

    [Fact]
    public void Splits_like_the_regex_on_bmp_text()
    {
        var texts = Qwen3TokenizerTests.Corpus.Concat(Qwen3TokenizerTests.RandomCorpus(2000, seed: 42)).Where(IsBmp).ToList();
        Assert.True(texts.Count > 300, $"only {texts.Count} texts");
        foreach (var text in texts)
        {
            var expected = QwenRegex.Matches(text).Select(m => m.Value).ToList();
            Assert.Equal(string.Concat(expected), text); // the pattern tiles the text
            Assert.Equal(expected, Qwen3PreTokenizer.Split(text));
        }
    }

    [Fact]
    public void Letters_and_numbers_outside_the_bmp_count_as_letters_and_numbers()
    {
        // .NET Regex would see surrogate halves here; the splitter sees code points, as Rust and JavaScript do.
        Assert.Equal(["𝐀𝐁𝐂", " 𠀀𠀁", " ", "𝟏", "𝟐"], Qwen3PreTokenizer.Split("𝐀𝐁𝐂 𠀀𠀁 𝟏𝟐"));
        Assert.Equal(["Hi", " 😀😀!\n"], Qwen3PreTokenizer.Split("Hi 😀😀!\n"));
    }

    [Fact]
    public void Examples_of_whitespace_and_contractions()
    {
        Assert.Equal(["a", "\n\n\n", "b", "  \n", " ", " c"], Qwen3PreTokenizer.Split("a\n\n\nb  \n  c"));
        Assert.Equal(["I", "'m", " here", "  "], Qwen3PreTokenizer.Split("I'm here  "));
        Assert.Equal(["2", "0", "2", "4", ".", "5"], Qwen3PreTokenizer.Split("2024.5"));
        Assert.Equal(["def", " f", "():\n", "   ", " return"], Qwen3PreTokenizer.Split("def f():\n    return"));
    }

    [NodeFact]
    public void Nfc_matches_javascript_normalize()
    {
        var texts = Qwen3TokenizerTests.Corpus.Concat(Qwen3TokenizerTests.RandomCorpus(500, seed: 3)).ToList();
        // Every code point the tables know (decomposable or combining), between a base letter and two marks,
        // plus Hangul. Characters assigned after the tables' Unicode version are not compared: Node's ICU may
        // be newer (it knows combining marks that Unicode 14 did not have).
        var all = Nfc.CodePointsWithData.Where(cp => cp >= 0xA0)
            .Select(cp => "a" + char.ConvertFromUtf32(cp) + "\u0301\u0323")
            .Concat(Enumerable.Range(0, 400).Select(i => "\u1100\u1161" + char.ConvertFromUtf32(0x11A8 + i % 27) + char.ConvertFromUtf32(0xAC00 + i * 28)))
            .ToList();
        Assert.True(all.Count > 2000, $"only {all.Count} code points");
        texts.AddRange(all.Chunk(64).Select(c => string.Concat(c)));
        var script = "const t = JSON.parse(require('fs').readFileSync(0, 'utf8')); process.stdout.write(JSON.stringify(t.map(s => s.normalize('NFC'))));";
        var json = RunNodeEval(script, JsonSerializer.Serialize(texts));
        var expected = JsonSerializer.Deserialize<string[]>(json)!;
        var failures = texts.Select((t, i) => (t, i)).Where(x => Nfc.Normalize(x.t) != expected[x.i]).Select(x => x.i).ToList();
        Assert.True(failures.Count == 0, $"{failures.Count} texts differ, first: {JsonSerializer.Serialize(texts[failures.FirstOrDefault()])} → {JsonSerializer.Serialize(expected[failures.FirstOrDefault()])} vs {JsonSerializer.Serialize(Nfc.Normalize(texts[failures.FirstOrDefault()]))}");
    }

    static string RunNodeEval(string script, string stdin)
    {
        var path = Path.Combine(Path.GetTempPath(), $"anneal-nfc-{Guid.NewGuid():N}.cjs");
        File.WriteAllText(path, script);
        try { return NodeReference.Run(path, stdin); }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Nfc_examples()
    {
        Assert.Equal("café", Nfc.Normalize("cafe\u0301"));
        Assert.Equal("\uAC01", Nfc.Normalize("\u1100\u1161\u11A8"));
        Assert.Equal("\u1E0D\u0307", Nfc.Normalize("\u1E0B\u0323"));      // ḋ + dot below → ḍ + dot above
        Assert.Equal("\u1E0D\u0307", Nfc.Normalize("d\u0307\u0323"));      // reordered, then composed with the lower class mark
        Assert.Equal("\u00C5", Nfc.Normalize("\u212B"));                      // Angstrom sign → Å
        Assert.Equal("\u03A9", Nfc.Normalize("\u2126"));                      // Ohm sign → Ω
        Assert.Equal("\u0308\u0301", Nfc.Normalize("\u0344"));                // excluded from recomposition
        var ascii = "plain ascii";
        Assert.Same(ascii, Nfc.Normalize(ascii));
    }
}
