// Records that are valid JSON but not usable training data, found by feeding the validator hostile
// input: lone UTF-16 surrogate escapes (a line-numbered error naming the field, never an exception),
// empty prompts and replies, and malformed tool calls.
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;

namespace Anneal.Core.Tests.Datasets;

public class HostileDatasetTests
{
    static DatasetReport Validate(string text) =>
        DatasetValidator.Validate(new MemoryStream(Encoding.UTF8.GetBytes(text)), new DatasetValidationOptions(20, false));

    const string Good = """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}""";

    static ErrorItem OnlyError(string record)
    {
        var report = Validate(Good + "\n" + record + "\n");
        Assert.False(report.IsValid);
        var e = Assert.Single(report.Errors);
        Assert.Equal(2, e.Line);
        return e;
    }

    [Theory]
    [InlineData("""{"messages": [{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "ok"}]}""", "messages[0].content")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "a\udfffb"}]}]}""", "messages[1].content[0].text")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "metadata": {"\ud83d": 1}}""", "metadata (a key)")]
    public void A_lone_surrogate_is_a_located_error_not_an_exception(string record, string field)
    {
        var e = OnlyError(record);
        Assert.Equal(field, e.Field);
        Assert.StartsWith($"Line 2: {field}: invalid Unicode", e.ToString());
    }

    [Fact]
    public void A_valid_surrogate_pair_escape_is_accepted()
    {
        Assert.True(Validate("""{"messages": [{"role": "user", "content": "\ud83d\ude00"}, {"role": "assistant", "content": "ok"}]}""").IsValid);
    }

    [Theory]
    [InlineData("""{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "ok"}]}""", "messages[0].content")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}""", "messages[1].content")]
    [InlineData("""{"messages": [{"role": "user", "content": []}, {"role": "assistant", "content": "ok"}]}""", "messages[0].content")]
    public void Empty_prompts_and_replies_are_refused(string record, string field)
    {
        var e = OnlyError(record);
        Assert.Equal(field, e.Field);
        Assert.Contains("must not be", e.Message);
    }

    [Fact]
    public void An_assistant_turn_that_only_calls_a_tool_may_have_empty_content()
    {
        const string record = """{"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "sun"}, {"role": "assistant", "content": "Sunny."}]}""";
        Assert.True(Validate(record).IsValid, string.Join("\n", Validate(record).Errors));
    }

    [Theory]
    [InlineData("[]", "messages[1].tool_calls", "empty list")]
    [InlineData("""[{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "[1, 2]"}}]""", "messages[1].tool_calls[0].function.arguments", "JSON object")]
    [InlineData("""[{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}, "extra": 1}]""", "messages[1].tool_calls[0].extra", "unknown key")]
    [InlineData("""[{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}, {"id": "c1", "type": "function", "function": {"name": "v", "arguments": "{}"}}]""", "messages[1].tool_calls[1].id", "already the id")]
    public void Malformed_tool_calls_are_refused(string calls, string field, string words)
    {
        var record = $$"""{"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "checking", "tool_calls": {{calls}}}, {"role": "assistant", "content": "Sunny."}]}""";
        var e = OnlyError(record);
        Assert.Equal(field, e.Field);
        Assert.Contains(words, e.Message);
    }
}
