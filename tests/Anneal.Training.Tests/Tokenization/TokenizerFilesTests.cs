// Loading errors name the folder, file and key; both merge formats of tokenizer.json are read.
using System.Text.Json.Nodes;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Tokenization;

public class TokenizerFilesTests
{
    static JsonObject TinyJson(TempDir dir)
    {
        TinyTokenizer.WriteFiles(dir.Path);
        return JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "tokenizer.json")))!.AsObject();
    }

    static void Save(TempDir dir, JsonObject json) => File.WriteAllText(Path.Combine(dir.Path, "tokenizer.json"), json.ToJsonString());

    [Fact]
    public void Missing_folder_and_missing_tokenizer_json_name_the_folder()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<FileNotFoundException>(() => Qwen3Tokenizer.Load(dir.Path));
        Assert.Contains($"tokenizer.json not found in {dir.Path}", e.Message);
        var missing = Path.Combine(dir.Path, "nope");
        var e2 = Assert.Throws<DirectoryNotFoundException>(() => Qwen3Tokenizer.Load(missing));
        Assert.Contains(missing, e2.Message);
    }

    [Fact]
    public void Merges_as_strings_give_the_same_tokenizer_as_merges_as_pairs()
    {
        using var dir = new TempDir();
        var json = TinyJson(dir);
        var pairs = Qwen3Tokenizer.Load(dir.Path);
        var merges = json["model"]!["merges"]!.AsArray();
        var asStrings = new JsonArray(merges.Select(m => (JsonNode)(m![0]!.GetValue<string>() + " " + m[1]!.GetValue<string>())).ToArray());
        json["model"]!["merges"] = asStrings;
        Save(dir, json);
        var strings = Qwen3Tokenizer.Load(dir.Path);
        foreach (var text in Qwen3TokenizerTests.Corpus) Assert.Equal(pairs.Encode(text), strings.Encode(text));
    }

    [Fact]
    public void Without_tokenizer_config_qwen_defaults_apply()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        File.Delete(Path.Combine(dir.Path, "tokenizer_config.json"));
        var tok = Qwen3Tokenizer.Load(dir.Path);
        Assert.Equal("<|im_end|>", tok.EosToken);
        Assert.Equal("<|endoftext|>", tok.PadToken);
        Assert.False(tok.HasChatTemplate);
    }

    [Theory]
    [InlineData("model.type", "\"WordPiece\"", "model.type is \"WordPiece\"; expected \"BPE\"")]
    [InlineData("model.vocab", "[]", "model.vocab missing or not an object")]
    [InlineData("model.merges.0", "\"a b c\"", "model.merges[0] is \"a b c\"; expected two tokens")]
    [InlineData("model.merges.1", "[\"Ġ\", 3]", "model.merges[1] is")]
    [InlineData("model.merges.2", "[\"no\", \"such\"]", "model.merges[2] \"no such\" uses a token missing from model.vocab")]
    [InlineData("model.vocab.Ġ", "99999999", "expected an integer id from 0 to")]
    [InlineData("model.merges", "{}", "model.merges is object; expected a list")]
    [InlineData("added_tokens.0", "\"<|x|>\"", "added_tokens[0] needs an integer \"id\"")]
    [InlineData("pre_tokenizer.pretokenizers", "\"Split\"", "unexpected structure")]
    [InlineData("normalizer", "{\"type\": \"NFKC\"}", "normalizer.type is \"NFKC\"")]
    [InlineData("pre_tokenizer", "{\"type\": \"Whitespace\"}", "pre_tokenizer step \"Whitespace\" is not supported")]
    [InlineData("decoder", "{\"type\": \"WordPiece\"}", "decoder.type is \"WordPiece\"")]
    public void Unsupported_or_broken_tokenizer_json_names_the_key(string path, string valueJson, string message)
    {
        using var dir = new TempDir();
        var json = TinyJson(dir);
        var parts = path.Split('.');
        JsonNode parent = json;
        for (int i = 0; i < parts.Length - 1; i++) parent = parent[parts[i]]!;
        var value = JsonNode.Parse(valueJson);
        if (int.TryParse(parts[^1], out int index)) parent.AsArray()[index] = value;
        else parent[parts[^1]] = value;
        Save(dir, json);
        var e = Assert.Throws<InvalidDataException>(() => Qwen3Tokenizer.Load(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "tokenizer.json"), e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Invalid_json_and_unknown_eos_are_reported_with_the_file()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var configPath = Path.Combine(dir.Path, "tokenizer_config.json");
        File.WriteAllText(configPath, "{\"eos_token\": \"<|nope|>\"}");
        var e = Assert.Throws<InvalidDataException>(() => Qwen3Tokenizer.Load(dir.Path));
        Assert.Contains("eos_token \"<|nope|>\" is not a token", e.Message);
        File.WriteAllText(configPath, "{\"eos_token\": ");
        var e2 = Assert.Throws<InvalidDataException>(() => Qwen3Tokenizer.Load(dir.Path));
        Assert.Contains(configPath, e2.Message);
        Assert.Contains("not valid JSON (line 1", e2.Message);
    }
}
