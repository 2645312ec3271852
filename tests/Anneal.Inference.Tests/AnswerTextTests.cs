// Pure parts of the /v1 layer: tool-call parsing and stop-sequence hold-back.
using Anneal.Inference.OpenAi;

namespace Anneal.Inference.Tests;

public sealed class AnswerTextTests
{
    [Fact]
    public void Tool_call_blocks_become_tool_calls_and_the_rest_content()
    {
        var (content, calls) = ToolCalls.Parse("Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        Assert.Equal("Let me look.", content);
        var call = Assert.Single(calls)!;
        Assert.Equal("get_weather", call["function"]!["name"]!.GetValue<string>());
        Assert.Equal("{\"city\":\"Paris\"}", call["function"]!["arguments"]!.GetValue<string>());
        Assert.StartsWith("call_", call["id"]!.GetValue<string>());
    }

    [Fact]
    public void A_tool_call_that_is_not_json_stays_in_the_content()
    {
        var (content, calls) = ToolCalls.Parse("<tool_call>\nnot json\n</tool_call>");
        Assert.Empty(calls);
        Assert.Contains("not json", content);
    }
}
