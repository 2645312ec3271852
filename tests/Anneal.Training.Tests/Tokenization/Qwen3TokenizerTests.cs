// Parity of Qwen3Tokenizer with the JavaScript tokenizer on the real Qwen3 tokenizer.json, over hand-picked
// text (code, CJK, emoji, numbers, whitespace, special tokens, text needing NFC) and seeded random strings.
using System.Diagnostics;
using System.Text;
using Anneal.Training.Tokenization;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Tokenization;

public class Qwen3TokenizerTests(ITestOutputHelper output)
{
    public static readonly string[] Corpus =
    [
        "Hello, world!",
        "Hello, my dog is cute",
        " leading space and trailing space ",
        "It's, they're, we've, I'm, you'll, he'd, IT'S, THEY'RE, don't",
        "The year 2024 has 366 days; π ≈ 3.14159 and 1,000,000.50 is big.",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "for (int i = 0; i < 10; i++) { sum += a[i]; }\t// comment\r\n",
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": 3}}",
        "   multiple   spaces\t\ttabs\n\n\nnewlines \n \n  end   ",
        "\n\n\n",
        "   ",
        "a\r\nb\rc\n",
        "中文测试：你好，世界！今天天气很好。",
        "日本語のテキストとカタカナ、ひらがな。",
        "한국어 텍스트입니다. 안녕하세요!",
        "Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷!",
        "café naïve résumé Ångström",
        "cafe\u0301 nai\u0308ve A\u030Angstro\u0308m",             // decomposed: NFC composes them
        "\u1100\u1161\u11A8 \u1112\u1161\u11AB",                 // Hangul jamo: NFC composes syllables
        "q\u0307\u0323 a\u0323\u0302 \u1E0B\u0323",                // combining marks needing reordering
        "Ω ohm sign \u2126, Kelvin \u212A, Å angstrom \u212B",     // singletons NFC replaces
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "<think>\nreasoning\n</think>\n\nanswer<|im_end|><|endoftext|>",
        "<tool_call>\n{\"name\": \"f\"}\n</tool_call><tool_response>ok</tool_response>",
        "<|im_start|><|im_start|>nested<|im_end|x <|im_end|>",
        "<|vision_start|><|image_pad|><|vision_end|>Describe the image.",
        "Math: 𝐀𝐁𝐂 𝟏𝟐𝟑 and ancient 𐌰𐌱 and rare CJK 𠀀𠀁 text",
        "URL https://example.com/path?q=1&x=%20 and email a.b@c.org",
        "Mixed123abc ABC-def_ghi 3rd 21st x86_64 ü̈",
        "Tabs\tand\u00A0no-break\u2003em space\u3000ideographic space",
        "Zero\u200Bwidth\u200Djoiner and \uFEFF BOM",
        "!!!??? ... --- ___ *** ### $$$ %%% ^^^ &&& |||",
        "'s 'S 'sounds 'll've 're'd",
        "Ελληνικά και Русский текст и العربية עברית हिन्दी",
        "ſt long s 'ſ",
        "ภาษาไทย ไม่มีช่องว่าง และ देवनागरी में मात्राएँ",
        "\r\n\r\n  \r\n\t\n x \u00A0\n\u3000y",
        "\uFEFFstart with BOM, a\uFEFF1, \uFEFF\uFEFF!",
        "👩🏽‍💻🏳️‍🌈 1️⃣ #️⃣ ©️ ™ ↔️",
        "    indented    code\n\t\ttabs\n        \n    more",
        "1234567890 3.14e-10 0x1F 1_000_000 ١٢٣ ۴۵۶ ४५६ 〇一二",
        "",
        new string('a', 2000),
        string.Concat(Enumerable.Repeat("ab ", 300)),
    ];

    /// <summary>Seeded random strings drawn from a pool that mixes every character class the splitter cares about.</summary>
    public static List<string> RandomCorpus(int count, int seed)
    {
        string[] pool =
        [
            "a", "Z", "é", "e\u0301", "ß", "中", "한", "\u1100", "\u1161", "ا", "ж", "0", "7", "²", "Ⅻ", "½", " ", "  ",
            "\t", "\n", "\r\n", "\r", "\u00A0", "\u3000", "'", "'s", "'LL", ".", ",", "!", "?", "-", "_", "(", ")", "{", "}",
            "\"", "\\", "/", "<", ">", "|", "😀", "👍🏽", "𝐀", "𠀀", "\u0308", "\u0323", "<|im_end|>", "<think>", "<|im_start|>",
        ];
        var rng = new Random(seed);
        var list = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            int len = rng.Next(1, 40);
            for (int k = 0; k < len; k++) sb.Append(pool[rng.Next(pool.Length)]);
            list.Add(sb.ToString());
        }
        return list;
    }

    static void AssertSameIds(IReadOnlyList<string> texts, int[][] expected, Qwen3Tokenizer tokenizer)
    {
        var failures = new List<string>();
        for (int i = 0; i < texts.Count; i++)
        {
            var actual = tokenizer.Encode(texts[i]);
            if (!actual.SequenceEqual(expected[i]))
                failures.Add($"#{i} {System.Text.Json.JsonSerializer.Serialize(texts[i])}\n  expected [{string.Join(",", expected[i])}]\n  actual   [{string.Join(",", actual)}]");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {texts.Count} texts differ:\n" + string.Join("\n", failures.Take(10)));
    }

    [NodeFact]
    public void Encode_matches_the_javascript_tokenizer_on_varied_text()
    {
        AssertSameIds(Corpus, NodeReference.Encode(Corpus), NodeReference.Qwen);
    }

    [NodeFact]
    public void Encode_matches_the_javascript_tokenizer_on_random_strings()
    {
        var texts = RandomCorpus(400, seed: 1234);
        AssertSameIds(texts, NodeReference.Encode(texts), NodeReference.Qwen);
    }

    [NodeFact]
    public void Encode_matches_the_javascript_tokenizer_on_the_repository_sources()
    {
        // Real code and prose: every .cs, .md, .sh and .json file of src/, tests/ and the root (not node_modules).
        var files = Directory.EnumerateFiles(NodeReference.RepoRoot, "*", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}node_modules{Path.DirectorySeparatorChar}")
                        && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}")
                        && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")
                        && !f.Contains($"{Path.DirectorySeparatorChar}.git{Path.DirectorySeparatorChar}")
                        && (f.EndsWith(".cs") || f.EndsWith(".md") || f.EndsWith(".sh") || f.EndsWith(".mjs") || f.EndsWith("package.json")))
            .Order(StringComparer.Ordinal).ToList();
        Assert.True(files.Count >= 10, $"only {files.Count} source files found under {NodeReference.RepoRoot}");
        var texts = files.Select(File.ReadAllText).ToList();
        AssertSameIds(texts, NodeReference.Encode(texts), NodeReference.Qwen);
    }

    [NodeFact]
    public void Decode_returns_the_nfc_text_that_was_encoded()
    {
        var tok = NodeReference.Qwen;
        foreach (var text in Corpus.Concat(RandomCorpus(100, seed: 7)))
        {
            // Added tokens are matched before normalisation, the rest is normalised; a text that is already
            // NFC round-trips exactly.
            var nfc = Nfc.Normalize(text);
            Assert.Equal(nfc, tok.Decode(tok.Encode(nfc)));
        }
    }

    [NodeFact]
    public void Special_tokens_and_sizes_come_from_the_model_files()
    {
        var tok = NodeReference.Qwen;
        Assert.Equal(151645, tok.EosTokenId);               // <|im_end|>
        Assert.Equal(151643, tok.PadTokenId);               // <|endoftext|>
        Assert.Equal(151669, tok.VocabSize);                // 151643 BPE tokens + 26 added tokens
        Assert.Equal(151644, tok.TokenToId("<|im_start|>"));
        Assert.Equal(151667, tok.TokenToId("<think>"));
        Assert.Equal(151668, tok.TokenToId("</think>"));
        Assert.Equal(151657, tok.TokenToId("<tool_call>"));
        Assert.Equal("<|im_end|>", tok.IdToToken(151645));
        Assert.Equal("Ġworld", tok.IdToToken(tok.Encode(" world").Single()));
        Assert.Null(tok.TokenToId("no such token"));
        Assert.Null(tok.IdToToken(-1));
        Assert.Null(tok.IdToToken(tok.VocabSize));
        Assert.True(tok.HasChatTemplate);
        Assert.Equal([151644, 872, 198], tok.Encode("<|im_start|>user\n"));
        Assert.Equal("user\n", tok.Decode(tok.Encode("<|im_start|>user\n"), skipSpecialTokens: true));
        // <think> is an added token but not a special one: it stays when special tokens are skipped.
        Assert.Equal("<think>x", tok.Decode(tok.Encode("<think>x<|im_end|>"), skipSpecialTokens: true));
    }

    [NodeFact]
    public void Encode_throughput_is_reported()
    {
        // Reported, not asserted (the machine is shared). CPU time of this process is printed beside wall time.
        var cpuLoad = Process.GetCurrentProcess().TotalProcessorTime;
        var swLoad = Stopwatch.StartNew();
        var tok = Qwen3Tokenizer.Load(NodeReference.QwenModelDir);
        output.WriteLine($"load tokenizer.json (11 MB, 151,669 tokens): wall {swLoad.ElapsedMilliseconds} ms, cpu {(Process.GetCurrentProcess().TotalProcessorTime - cpuLoad).TotalMilliseconds:F0} ms");
        var text = string.Join("\n", Corpus.Take(Corpus.Length - 2)) + "\n";
        var big = new StringBuilder();
        while (big.Length < 1_000_000) big.Append(text);
        var s = big.ToString();
        tok.Encode(s); // warm the cache
        Measure("repeated text (cached pieces)", s, tok);
        Measure("random text (mostly new pieces)", string.Concat(RandomCorpus(20000, seed: 99)), tok);
    }

    void Measure(string label, string text, Qwen3Tokenizer tok)
    {
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        int n = tok.Encode(text).Length;
        sw.Stop();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
        output.WriteLine($"{label}: {text.Length / 1e6:F2} M chars → {n} tokens; wall {sw.ElapsedMilliseconds} ms, cpu {cpu.TotalMilliseconds:F0} ms ({n / cpu.TotalSeconds / 1e6:F2} M tokens per cpu-second)");
        Assert.True(n > 0);
    }
}
