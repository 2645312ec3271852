// `anneal eval` on the generated tiny model (CPU, a few tokens per prompt), then `anneal filter` on
// its traces and `anneal files check` on the resulting dataset: the eval → filter → train input loop.
using System.Text.Json.Nodes;
using Anneal.Training.Model;
using Anneal.Training.Native;

namespace Anneal.Cli.Tests.EvalFilter;

[Collection("trainer")]
public class EvalCommandTests
{
    const string Prompts = """
        {"messages":[{"role":"user","content":"What is 2 plus 2?"}],"expected":"4","metadata":{"topic":"math"}}
        {"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hello."}]}
        {"messages":[{"role":"user","content":"Name a colour."}],"expected":"blue"}
        """;

    /// <summary>The tiny model's folder (weights are drawn with TorchSharp, hence the native load).</summary>
    static void CreateTinyModel(CliSandbox box)
    {
        NativeLibraries.EnsureTorchLoaded();
        TinyModel.EnsureCreated(Path.Combine(box.Dir, "tiny"));
    }

    [Fact]
    public async Task Eval_writes_one_scored_trace_per_prompt_and_filter_makes_a_dataset_that_checks()
    {
        using var box = new CliSandbox();
        CreateTinyModel(box);
        box.Write("prompts.jsonl", Prompts);

        var eval = await box.RunAsync("eval", "--model", "tiny", "--prompts", "prompts.jsonl", "--output", "out/traces.jsonl", "--max-new-tokens", "4", "--device", "cpu");
        Assert.True(eval.ExitCode == 0, eval.ToString());
        Assert.Contains("Wrote 3 traces", eval.Out);
        Assert.Contains("tokens/s", eval.Out);
        Assert.Contains("over 2 prompts with an expected answer", eval.Out);

        var lines = File.ReadAllLines(Path.Combine(box.Dir, "out", "traces.jsonl"));
        Assert.Equal(3, lines.Length);
        var traces = lines.Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        foreach (var t in traces)
        {
            Assert.Equal(["trace_id", "model", "created_at", "messages", "completion", "expected", "score", "metadata", "usage", "latency_ms"], t.Select(p => p.Key));
            Assert.StartsWith("trace_", t["trace_id"]!.GetValue<string>());
            Assert.Equal("tiny", t["model"]!.GetValue<string>());
            Assert.True(DateTimeOffset.TryParse(t["created_at"]!.GetValue<string>(), out _));
            var last = t["messages"]!.AsArray()[^1]!;
            Assert.Equal("assistant", last["role"]!.GetValue<string>());
            Assert.Equal(t["completion"]!.GetValue<string>(), last["content"]!.GetValue<string>());
            Assert.InRange(t["usage"]!["completion_tokens"]!.GetValue<int>(), 0, 4);
            Assert.True(t["usage"]!["prompt_tokens"]!.GetValue<int>() > 0);
            Assert.True(t["latency_ms"]!.GetValue<long>() >= 0);
        }
        Assert.Equal(2, traces[0]["messages"]!.AsArray().Count);
        Assert.Equal(3, traces[1]["messages"]!.AsArray().Count);
        Assert.Equal("math", traces[0]["metadata"]!["topic"]!.GetValue<string>());
        Assert.InRange(traces[0]["score"]!.GetValue<double>(), 0.0, 1.0);
        Assert.Null(traces[1]["score"]);
        Assert.Null(traces[1]["expected"]);

        var filter = await box.RunAsync("filter", "--traces", "out/traces.jsonl", "--output", "ft_data/out.jsonl", "--model", "tiny-eval");
        Assert.True(filter.ExitCode == 0, filter.ToString());
        var kept = File.ReadAllLines(Path.Combine(box.Dir, "ft_data", "out.jsonl"));
        Assert.Contains($"Kept {kept.Length} of 3 traces", filter.Out);
        Assert.Equal("tiny-eval", JsonNode.Parse(kept[0])!["metadata"]!["source_model"]!.GetValue<string>());

        var check = await box.RunAsync("files", "check", "ft_data/out.jsonl");
        Assert.True(check.ExitCode == 0, check.ToString());
        Assert.Contains($"OK: {kept.Length} examples", check.Out);
    }

    [Fact]
    public async Task Limit_takes_the_first_prompts()
    {
        using var box = new CliSandbox();
        CreateTinyModel(box);
        box.Write("prompts.jsonl", Prompts);
        var eval = await box.RunAsync("eval", "--model", "tiny", "--prompts", "prompts.jsonl", "--output", "traces.jsonl", "--max-new-tokens", "2", "--limit", "1", "--device", "cpu");
        Assert.True(eval.ExitCode == 0, eval.ToString());
        Assert.Single(File.ReadAllLines(Path.Combine(box.Dir, "traces.jsonl")));
    }

    [Fact]
    public async Task Bad_inputs_are_named_and_nothing_is_written()
    {
        using var box = new CliSandbox();
        box.Write("prompts.jsonl", Prompts);

        var missing = await box.RunAsync("eval", "--model", "nope", "--prompts", "prompts.jsonl", "--output", "t.jsonl");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("--model", missing.Err);
        Assert.Contains("folder not found", missing.Err);

        // A job's output folder instead of its final/ folder.
        Directory.CreateDirectory(Path.Combine(box.Dir, "job", "final"));
        var notModel = await box.RunAsync("eval", "--model", "job", "--prompts", "prompts.jsonl", "--output", "t.jsonl");
        Assert.Equal(2, notModel.ExitCode);
        Assert.Contains("not a model folder", notModel.Err);
        Assert.Contains(Path.Combine("job", "final"), notModel.Err);

        // A config.json alone is not a usable model.
        Directory.CreateDirectory(Path.Combine(box.Dir, "broken"));
        box.Write("broken/config.json", "{}");
        var broken = await box.RunAsync("eval", "--model", "broken", "--prompts", "prompts.jsonl", "--output", "t.jsonl", "--device", "cpu");
        Assert.Equal(2, broken.ExitCode);
        Assert.Contains("tokenizer.json is missing", broken.Err);

        CreateTinyModel(box);
        var noPrompts = await box.RunAsync("eval", "--model", "tiny", "--prompts", "none.jsonl", "--output", "t.jsonl");
        Assert.Equal(2, noPrompts.ExitCode);
        Assert.Contains("none.jsonl: file not found", noPrompts.Err);

        box.Write("bad.jsonl", """
            {"messages":[{"role":"user","content":"fine"}]}
            {"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}
            {"messages":[{"role":"user","content":"q"}],"expected":4}
            """);
        var bad = await box.RunAsync("eval", "--model", "tiny", "--prompts", "bad.jsonl", "--output", "t.jsonl");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("bad.jsonl: 2 errors", bad.Err);
        Assert.Contains("Line 2: messages[1].role: the last message must be the user's turn", bad.Err);
        Assert.Contains("Line 3: expected: must be a string", bad.Err);

        var zero = await box.RunAsync("eval", "--model", "tiny", "--prompts", "prompts.jsonl", "--output", "t.jsonl", "--max-new-tokens", "0");
        Assert.Equal(2, zero.ExitCode);
        Assert.Contains("--max-new-tokens 0", zero.Err);

        var limit = await box.RunAsync("eval", "--model", "tiny", "--prompts", "prompts.jsonl", "--output", "t.jsonl", "--limit", "-1");
        Assert.Equal(2, limit.ExitCode);
        Assert.Contains("--limit -1", limit.Err);

        Assert.False(File.Exists(Path.Combine(box.Dir, "t.jsonl")));
    }
}
