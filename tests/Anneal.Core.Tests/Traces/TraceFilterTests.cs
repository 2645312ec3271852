using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Datasets;
using Anneal.Core.Traces;

namespace Anneal.Core.Tests.Traces;

public class TraceFilterTests
{
    static string TraceLine(string id, double? score, string answer = "4", string model = "m1")
    {
        var trace = new EvalTrace(id, model, DateTimeOffset.UnixEpoch,
            new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "2+2?" }, new JsonObject { ["role"] = "assistant", ["content"] = answer }),
            answer, score is null ? null : "4", score, null, new TraceUsage(5, 1), 12);
        return trace.ToJsonLine();
    }

    static TraceFilterResult Filter(string text, TraceFilterOptions options) =>
        TraceFilter.Filter(new MemoryStream(Encoding.UTF8.GetBytes(text)), options);

    [Fact]
    public void A_trace_line_round_trips_in_snake_case()
    {
        var node = JsonNode.Parse(TraceLine("trace_a", 0.5))!.AsObject();
        Assert.Equal(["trace_id", "model", "created_at", "messages", "completion", "expected", "score", "metadata", "usage", "latency_ms"],
            node.Select(p => p.Key));
        Assert.Equal(5, node["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(1, node["usage"]!["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public void Keeps_scores_at_or_above_the_minimum_and_counts_the_reasons()
    {
        var text = string.Join("\n", TraceLine("t1", 1.0), TraceLine("t2", 0.3), TraceLine("t3", null), TraceLine("t4", 0.5), TraceLine("t5", 0.9, answer: "  "));
        var result = Filter(text, new TraceFilterOptions(MinScore: 0.5));
        Assert.Equal(5, result.TracesRead);
        Assert.Equal(["t1", "t4"], result.Records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        Assert.Equal(1, result.Dropped[TraceFilter.BelowMinScore]);
        Assert.Equal(1, result.Dropped[TraceFilter.NoScore]);
        Assert.Equal(1, result.Dropped[TraceFilter.EmptyAnswer]);
        Assert.Equal(0, result.TotalBadLines);
    }

    [Fact]
    public void Correct_with_expected_keeps_failed_traces_with_the_expected_answer_as_the_reply()
    {
        var text = string.Join("\n", TraceLine("t1", 1.0), TraceLine("t2", 0.3, answer: "five"), TraceLine("t3", null));
        var result = Filter(text, new TraceFilterOptions(MinScore: 0.99, CorrectWithExpected: true));
        Assert.Equal(["t1", "t2"], result.Records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        var corrected = result.Records[1];
        Assert.Equal("4", corrected["messages"]![1]!["content"]!.GetValue<string>());
        Assert.True(corrected["metadata"]!["corrected"]!.GetValue<bool>());
        Assert.Null(result.Records[0]["metadata"]!["corrected"]);
        Assert.Equal(1, result.Dropped[TraceFilter.NoScore]);
    }

    [Fact]
    public void Without_a_minimum_null_scores_are_kept_and_max_examples_takes_the_first()
    {
        var text = string.Join("\n", TraceLine("t1", null), TraceLine("t2", 0.1), TraceLine("t3", 1.0));
        var result = Filter(text, new TraceFilterOptions(MaxExamples: 2, SourceModel: "my-model"));
        Assert.Equal(["t1", "t2"], result.Records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        Assert.Equal(1, result.Dropped[TraceFilter.OverMaxExamples]);
        Assert.Null(result.Records[0]["metadata"]!["score"]);
        Assert.Equal("my-model", result.Records[0]["metadata"]!["source_model"]!.GetValue<string>());
    }

    [Fact]
    public void Source_model_defaults_to_the_traces_model()
    {
        var result = Filter(TraceLine("t1", 1.0, model: "out/final"), new TraceFilterOptions());
        Assert.Equal("out/final", result.Records.Single()["metadata"]!["source_model"]!.GetValue<string>());
        Assert.Equal(1.0, result.Records.Single()["metadata"]!["score"]!.GetValue<double>());
    }

    [Fact]
    public void Bad_lines_are_skipped_and_reported_with_their_line_numbers()
    {
        var text = string.Join("\n",
            TraceLine("t1", 1.0),
            "{not json",
            """{"trace_id":"t3","score":1.5,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}""",
            """{"trace_id":"t4","score":1,"messages":[{"role":"user","content":"q"}]}""",
            """{"score":1,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}""",
            """{"trace_id":"t6","score":"high","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}""",
            """{"trace_id":"t7","messages":[{"role":"robot","content":"q"},{"role":"assistant","content":"a"}]}""",
            "[1,2]",
            "",
            TraceLine("t10", 0.8));
        var result = Filter(text, new TraceFilterOptions(MinScore: 0.5));
        Assert.Equal(["t1", "t10"], result.Records.Select(r => r["metadata"]!["trace_id"]!.GetValue<string>()));
        var bad = result.BadLines.Select(e => $"{e.Line}|{e.Field}|{e.Message}").ToList();
        Assert.Contains(bad, e => e.StartsWith("2||malformed JSON"));
        Assert.Contains(bad, e => e.StartsWith("3|score|must be a number in [0, 1] or null, got 1.5"));
        Assert.Contains(bad, e => e.StartsWith("4|messages|the last message must be the generated assistant reply"));
        Assert.Contains(bad, e => e.StartsWith("5|trace_id|required"));
        Assert.Contains(bad, e => e.StartsWith("6|score|must be a number"));
        Assert.Contains(bad, e => e.StartsWith("7|messages[0].role|not a valid SFT example"));
        Assert.Contains(bad, e => e.StartsWith("8||expected a trace object"));
        Assert.Equal(7, result.TotalBadLines);
    }

    [Fact]
    public void The_written_dataset_passes_the_validator_and_replaces_the_target_whole()
    {
        var dir = Directory.CreateTempSubdirectory("anneal-traces-").FullName;
        try
        {
            var path = Path.Combine(dir, "ft_data", "out.jsonl");
            var result = Filter(string.Join("\n", TraceLine("t1", 1.0), TraceLine("t2", 0.7)), new TraceFilterOptions());
            TraceFilter.WriteDataset(path, result.Records);
            var report = DatasetValidator.ValidateFile(path);
            Assert.True(report.IsValid, string.Join("\n", report.Errors));
            Assert.Equal(2, report.NumExamples);
            Assert.Equal(["messages", "metadata"], DatasetRecords.Read(path).First().Record.Select(p => p.Key));

            // A write that fails half-way leaves the previous file as it was, and no temporary file.
            static IEnumerable<string> Failing() { yield return "{}"; throw new IOException("disk full"); }
            var before = File.ReadAllText(path);
            Assert.Throws<IOException>(() => AtomicJsonl.Write(path, Failing()));
            Assert.Equal(before, File.ReadAllText(path));
            Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
