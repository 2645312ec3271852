using System.Text;
using Anneal.Core.Traces;

namespace Anneal.Core.Tests.Traces;

public class EvalPromptsTests
{
    static EvalPromptsReport Read(string text) => EvalPrompts.Read(new MemoryStream(Encoding.UTF8.GetBytes(text)));

    [Fact]
    public void Reads_prompts_with_expected_answers_and_metadata()
    {
        var report = Read("""
            {"messages":[{"role":"user","content":"2+2?"}],"expected":"4","metadata":{"topic":"math"}}

            {"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}
            """);
        Assert.True(report.IsValid, string.Join("\n", report.Errors));
        Assert.Equal(2, report.Prompts.Count);
        Assert.Equal("4", report.Prompts[0].Expected);
        Assert.Equal("math", report.Prompts[0].Metadata!["topic"]!.GetValue<string>());
        Assert.Equal(3, report.Prompts[1].Line);
        Assert.Null(report.Prompts[1].Expected);
    }

    [Fact]
    public void The_example_prompts_file_is_valid()
    {
        var report = EvalPrompts.ReadFile(RepoPaths.Of("examples", "data", "eval_prompts.jsonl"));
        Assert.True(report.IsValid, string.Join("\n", report.Errors));
        Assert.All(report.Prompts, p => Assert.NotNull(p.Expected));
    }

    [Fact]
    public void Bad_prompts_are_reported_with_line_and_field()
    {
        var report = Read("""
            {"messages":[{"role":"user","content":"ok"}]}
            {"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}
            {"messages":[{"role":"usr","content":"hi"}]}
            {"messages":[],"expected":4}
            {"prompt":"hi"}
            not json
            {"messages":[{"role":"user"}],"metadata":[1]}
            """);
        Assert.False(report.IsValid);
        Assert.Single(report.Prompts);
        var errors = report.Errors.Select(e => $"{e.Line}|{e.Field}|{e.Message}").ToList();
        Assert.Contains(errors, e => e.StartsWith("2|messages[1].role|the last message must be the user's turn"));
        Assert.Contains(errors, e => e.StartsWith("3|messages[0].role|") && e.Contains("did you mean 'user'"));
        Assert.Contains(errors, e => e.StartsWith("4|expected|must be a string"));
        Assert.Contains(errors, e => e.StartsWith("4|messages|needs at least 1 message"));
        Assert.Contains(errors, e => e.StartsWith("5|prompt|unknown key"));
        Assert.Contains(errors, e => e.StartsWith("5|messages|required"));
        Assert.Contains(errors, e => e.StartsWith("6||malformed JSON"));
        Assert.Contains(errors, e => e.StartsWith("7|messages[0].content|required"));
        Assert.Contains(errors, e => e.StartsWith("7|metadata|must be an object"));
    }

    [Fact]
    public void An_empty_file_is_an_error() => Assert.Contains("no prompts", Read("\n\n").Errors.Single().Message);
}
