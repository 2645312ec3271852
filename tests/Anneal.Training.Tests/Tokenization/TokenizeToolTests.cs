// `anneal tokenize`: raw and --chat output, and clear errors for bad input.
using System.Text.Json;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Tokenization;

public class TokenizeToolTests
{
    static (int Code, string Out, string Err) Run(string modelDir, bool chat, string stdin)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = TokenizeTool.Run(modelDir, chat, new StringReader(stdin), output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void Raw_mode_prints_ids_and_tokens()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var tok = Qwen3Tokenizer.Load(dir.Path);
        var (code, stdout, stderr) = Run(dir.Path, false, "The capital of France<|im_end|>\n");
        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        using var doc = JsonDocument.Parse(stdout);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var tokens = doc.RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetString()).ToArray();
        Assert.Equal(tok.Encode("The capital of France<|im_end|>"), ids); // the trailing newline is dropped
        Assert.Equal(ids.Select(tok.IdToToken), tokens);
        Assert.Equal("<|im_end|>", tokens[^1]);
        Assert.Contains("Ġcapital", tokens);
    }

    [Fact]
    public void Chat_mode_prints_ids_mask_and_rendered_text()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var tok = Qwen3Tokenizer.Load(dir.Path);
        var line = """{"messages": [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Capital of Italy?"}, {"role": "assistant", "content": "Rome."}]}""";
        var (code, stdout, stderr) = Run(dir.Path, true, "\uFEFF\n" + line + "\n");
        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        using var doc = JsonDocument.Parse(stdout);
        var text = doc.RootElement.GetProperty("text").GetString();
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var mask = doc.RootElement.GetProperty("mask").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal("<|im_start|>system\nBe short.<|im_end|>\n<|im_start|>user\nCapital of Italy?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nRome.<|im_end|>\n", text);
        Assert.Equal(tok.Encode(text!), ids);
        Assert.Equal(ids.Length, mask.Length);
        Assert.Equal("<think>\n\n</think>\n\nRome.<|im_end|>", tok.Decode(ids.Where((_, i) => mask[i] == 1)));
        Assert.Equal(0, mask[^1]); // the final "\n" after <|im_end|>
    }

    [Fact]
    public void Chat_mode_prints_one_line_per_record()
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var a = """{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}""";
        var b = """{"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}""";
        var (code, stdout, _) = Run(dir.Path, true, a + "\n\n" + b + "\n");
        Assert.Equal(0, code);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.EndsWith("d<|im_end|>\n", JsonDocument.Parse(lines[1]).RootElement.GetProperty("text").GetString());

        // A bad record stops the run: the good ones before it are printed, the error names its line.
        var (code2, stdout2, stderr2) = Run(dir.Path, true, a + "\n{\"messages\": 3}\n" + b);
        Assert.Equal(2, code2);
        Assert.Single(stdout2.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("stdin line 2: field messages: expected a list of messages, got a number", stderr2);
    }

    [Fact]
    public void Missing_tokenizer_names_the_folder()
    {
        using var dir = new TempDir();
        var (code, stdout, stderr) = Run(dir.Path, false, "hi");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains($"tokenizer.json not found in {dir.Path}", stderr);
    }

    [Fact]
    public void Corrupt_tokenizer_json_is_reported_with_its_path()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer.json"), "{\"model\": ");
        var (code, _, stderr) = Run(dir.Path, false, "hi");
        Assert.Equal(2, code);
        Assert.Contains(Path.Combine(dir.Path, "tokenizer.json") + ": not valid JSON", stderr);
    }

    [Theory]
    [InlineData("", "no JSONL record")]
    [InlineData("\n\n{\"messages\": [", "stdin line 3: invalid JSON at byte")]
    [InlineData("[1, 2]", "stdin line 1: expected a JSON object with \"messages\", got array")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"robot\", \"content\": \"y\"}]}", "stdin line 1: field messages[1].role: expected one of system, user, assistant, tool, got \"robot\"")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": {\"text\": \"x\"}}]}", "stdin line 1: field messages[0].content: expected a string or a list of parts, got an object")]
    public void Bad_chat_input_names_the_line_and_field(string stdin, string message)
    {
        using var dir = new TempDir();
        TinyTokenizer.WriteFiles(dir.Path);
        var (code, stdout, stderr) = Run(dir.Path, true, stdin);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains(message, stderr);
    }
}
