// The generated tokenizer of the tiny model: deterministic, loadable by Qwen3Tokenizer and by the
// JavaScript tokenizer (which must agree on every id), with Qwen's special tokens.
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Tokenization;

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("anneal-tok-").FullName;
    public void Dispose() => Directory.Delete(Path, recursive: true);
}

public class TinyTokenizerTests
{
    static string Hash(string file) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));

    [Fact]
    public void Files_are_identical_on_every_run()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        Assert.Equal(TinyTokenizer.WriteFiles(a.Path), TinyTokenizer.WriteFiles(b.Path));
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json" })
            Assert.Equal(Hash(System.IO.Path.Combine(a.Path, name)), Hash(System.IO.Path.Combine(b.Path, name)));
    }

    [Fact]
    public void Loads_with_qwen_special_tokens_and_round_trips_text()
    {
        using var dir = new TempDir();
        int vocabSize = TinyTokenizer.WriteFiles(dir.Path);
        var tok = Qwen3Tokenizer.Load(dir.Path);
        Assert.Equal(vocabSize, tok.VocabSize);
        Assert.InRange(vocabSize, 256 + 300 + 26, 256 + TinyTokenizer.MergeCount + 26);
        Assert.Equal("<|im_end|>", tok.IdToToken(tok.EosTokenId));
        Assert.Equal("<|endoftext|>", tok.IdToToken(tok.PadTokenId));
        foreach (var special in TinyTokenizer.QwenAddedTokens)
            Assert.Equal([tok.TokenToId(special)!.Value], tok.Encode(special));

        // Merges learned from the corpus: common words are single tokens, unseen text falls back to bytes.
        Assert.Single(tok.Encode(" the"));
        Assert.True(tok.Encode("The capital of France is Paris.").Length < "The capital of France is Paris.".Length / 2);
        foreach (var text in Qwen3TokenizerTests.Corpus)
        {
            var nfc = Nfc.Normalize(text);
            Assert.Equal(nfc, tok.Decode(tok.Encode(nfc)));
        }

        var example = Qwen3ChatTemplate.Encode(tok, JsonNode.Parse("""{"messages": [{"role": "user", "content": "What is the capital of Italy?"}, {"role": "assistant", "content": "Rome."}]}""")!.AsObject());
        Assert.Equal("<think>\n\n</think>\n\nRome.<|im_end|>", tok.Decode(example.InputIds.Where((_, i) => example.Trained[i])));
    }

    [NodeFact]
    public void The_javascript_tokenizer_reads_the_files_and_agrees()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var tok = Qwen3Tokenizer.Load(dir.Path);
        var texts = Qwen3TokenizerTests.Corpus.Concat(Qwen3TokenizerTests.RandomCorpus(200, seed: 5)).ToList();
        var expected = NodeReference.Encode(texts, dir.Path);
        for (int i = 0; i < texts.Count; i++)
            Assert.True(expected[i].SequenceEqual(tok.Encode(texts[i])), $"text #{i} {System.Text.Json.JsonSerializer.Serialize(texts[i])}: expected [{string.Join(",", expected[i])}], got [{string.Join(",", tok.Encode(texts[i]))}]");
    }
}
