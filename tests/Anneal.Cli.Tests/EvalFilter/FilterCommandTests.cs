// `anneal filter` on a hand-written traces file: what is kept and dropped, bad lines named by
// number, bad options, and an output that is either complete and valid or not written at all.
using System.Text.Json.Nodes;

namespace Anneal.Cli.Tests.EvalFilter;

public class FilterCommandTests
{
    static string Trace(string id, string score, string answer = "4") =>
        $$"""{"trace_id":"{{id}}","model":"base","created_at":"2026-01-01T00:00:00+00:00","messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"{{answer}}"}],"completion":"{{answer}}","expected":"4","score":{{score}},"metadata":null,"usage":{"prompt_tokens":9,"completion_tokens":1},"latency_ms":3}""";

    static readonly string Traces = string.Join("\n",
        Trace("t1", "1.0"),
        Trace("t2", "0.25", answer: "four-ish"),
        Trace("t3", "null"),
        """{"trace_id":"t4","score":0.9,"messages":[{"role":"user","content":"no reply"}]}""",
        "{oops",
        Trace("t6", "0.75", answer: "4 of course"),
        Trace("t7", "0.9", answer: " ")) + "\n";

    [Fact]
    public async Task Keeps_scores_above_the_minimum_reports_bad_lines_and_writes_a_dataset_that_checks()
    {
        using var box = new CliSandbox();
        box.Write("traces.jsonl", Traces);
        var filter = await box.RunAsync("filter", "--traces", "traces.jsonl", "--output", "ft_data/out.jsonl", "--min-score", "0.5");
        Assert.True(filter.ExitCode == 0, filter.ToString());
        Assert.Contains("Kept 2 of 7 traces", filter.Out);
        Assert.Contains("1 score below --min-score 0.5", filter.Out);
        Assert.Contains("1 no score", filter.Out);
        Assert.Contains("1 empty answer", filter.Out);
        Assert.Contains("skipped 2 problems in bad trace lines", filter.Err);
        Assert.Contains("Line 4: messages: the last message must be the generated assistant reply", filter.Err);
        Assert.Contains("Line 5: malformed JSON", filter.Err);

        var records = File.ReadAllLines(Path.Combine(box.Dir, "ft_data", "out.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(["t1", "t6"], records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        Assert.Equal(0.75, records[1]["metadata"]!["score"]!.GetValue<double>());
        Assert.Equal("base", records[1]["metadata"]!["source_model"]!.GetValue<string>());
        Assert.Equal("4 of course", records[1]["messages"]![1]!["content"]!.GetValue<string>());

        var check = await box.RunAsync("files", "check", "ft_data/out.jsonl");
        Assert.True(check.ExitCode == 0, check.ToString());
        Assert.Contains("OK: 2 examples", check.Out);
    }

    [Fact]
    public async Task Max_examples_and_model_name_apply_without_a_minimum_score()
    {
        using var box = new CliSandbox();
        box.Write("traces.jsonl", Traces);
        var filter = await box.RunAsync("filter", "--traces", "traces.jsonl", "--output", "out.jsonl", "--max-examples", "3", "--model", "qwen-eval");
        Assert.True(filter.ExitCode == 0, filter.ToString());
        Assert.Contains("Kept 3 of 7 traces", filter.Out);
        Assert.Contains("1 over --max-examples 3", filter.Out);
        var records = File.ReadAllLines(Path.Combine(box.Dir, "out.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        // Without --min-score the trace with a null score is kept.
        Assert.Equal(["t1", "t2", "t3"], records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        Assert.All(records, r => Assert.Equal("qwen-eval", r["metadata"]!["source_model"]!.GetValue<string>()));
    }

    [Fact]
    public async Task Nothing_kept_is_an_error_and_leaves_an_existing_output_untouched()
    {
        using var box = new CliSandbox();
        box.Write("low.jsonl", Trace("a", "0.1") + "\n" + Trace("b", "null") + "\n");
        box.Write("keep.jsonl", "previous content\n");
        var empty = await box.RunAsync("filter", "--traces", "low.jsonl", "--output", "keep.jsonl", "--min-score", "0.5");
        Assert.Equal(2, empty.ExitCode);
        Assert.Contains("no trace kept from 2 read", empty.Err);
        Assert.Contains("1 score below --min-score 0.5", empty.Err);
        Assert.Contains("was not written", empty.Err);
        Assert.Equal("previous content\n", File.ReadAllText(Path.Combine(box.Dir, "keep.jsonl")));
        // No temporary file is left beside it.
        Assert.Equal(["keep.jsonl", "low.jsonl"], Directory.GetFiles(box.Dir).Select(Path.GetFileName).Order());

        // The same target is replaced whole once something passes.
        var some = await box.RunAsync("filter", "--traces", "low.jsonl", "--output", "keep.jsonl", "--min-score", "0.1");
        Assert.True(some.ExitCode == 0, some.ToString());
        Assert.Equal("a", JsonNode.Parse(File.ReadAllLines(Path.Combine(box.Dir, "keep.jsonl")).Single())!["metadata"]!["trace_id"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bad_options_and_missing_files_are_named()
    {
        using var box = new CliSandbox();
        box.Write("traces.jsonl", Traces);
        var missing = await box.RunAsync("filter", "--traces", "nope.jsonl", "--output", "out.jsonl");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("--traces", missing.Err);
        Assert.Contains("nope.jsonl: file not found", missing.Err);

        var score = await box.RunAsync("filter", "--traces", "traces.jsonl", "--output", "out.jsonl", "--min-score", "1.5");
        Assert.Equal(2, score.ExitCode);
        Assert.Contains("--min-score 1.5: expected a number from 0 to 1", score.Err);

        var notNumber = await box.RunAsync("filter", "--traces", "traces.jsonl", "--output", "out.jsonl", "--min-score", "high");
        Assert.Equal(2, notNumber.ExitCode);
        Assert.Contains("high", notNumber.Err);

        var max = await box.RunAsync("filter", "--traces", "traces.jsonl", "--output", "out.jsonl", "--max-examples", "0");
        Assert.Equal(2, max.ExitCode);
        Assert.Contains("--max-examples 0: expected a positive number", max.Err);

        var noOutput = await box.RunAsync("filter", "--traces", "traces.jsonl");
        Assert.Equal(2, noOutput.ExitCode);
        Assert.Contains("--output", noOutput.Err);

        Assert.False(File.Exists(Path.Combine(box.Dir, "out.jsonl")));
    }
}
