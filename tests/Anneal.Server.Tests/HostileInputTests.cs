// A generated corpus of malformed job bodies and datasets (fixed seed, so a failure reproduces):
// every one is refused with a located message (a field for bodies, `Line N` for datasets), never
// a 5xx and never an "internal error".
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Xunit.Abstractions;

namespace Anneal.Server.Tests;

public class HostileInputTests(ITestOutputHelper output)
{
    const string Surrogate = "\\ud800";

    /// <summary>Job bodies with one field broken: (raw JSON, the field the answer must name).</summary>
    static IEnumerable<(string Body, string Field)> JobBodies(string fileId, int seed)
    {
        var fields = new Dictionary<string, string>
        {
            ["model"] = "\"anneal/tiny-qwen3\"", ["training_type"] = "\"sft_offline\"", ["training_file_id"] = $"\"{fileId}\"",
            ["hyperparameters"] = "{\"n_epochs\": 1}", ["suffix"] = "\"s\"", ["metadata"] = "{\"note\": \"n\"}",
        };
        string Body(string field, string value) =>
            "{" + string.Join(", ", fields.Select(f => $"\"{f.Key}\": {(f.Key == field ? value : f.Value)}")) + "}";
        var wrong = new[] { "12", "true", "[1]", "{\"a\": 1}", "\"\"", $"\"{Surrogate}\"", $"\"a{Surrogate}b\"", "\"" + new string('x', 300) + "\"" };
        var random = new Random(seed);
        foreach (var field in fields.Keys)
            foreach (var value in wrong.OrderBy(_ => random.Next()).Take(5))
                yield return (Body(field, value), field);
        // Strings inside nested objects and keys.
        yield return (Body("hyperparameters", $"{{\"n_epochs\": 1, \"lr_scheduler\": \"{Surrogate}\"}}"), "hyperparameters.lr_scheduler");
        yield return (Body("hyperparameters", $"{{\"n_epochs\": 1, \"{Surrogate}\": 1}}"), "hyperparameters");
        yield return (Body("metadata", $"{{\"effective_config\": {{\"compute\": {{\"gpu_type\": \"{Surrogate}\"}}}}}}"), "metadata.effective_config.compute.gpu_type");
    }

    [Fact]
    public async Task Every_malformed_job_body_is_a_4xx_naming_its_field()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        int refused = 0, accepted = 0;
        foreach (var (body, field) in JobBodies(file.Id, seed: 10))
        {
            var response = await t.Http.PostAsync("learning/jobs", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True((int)response.StatusCode < 500, $"{(int)response.StatusCode} for {body}: {text}");
            if (response.IsSuccessStatusCode) { accepted++; continue; } // e.g. a suffix that is simply a string
            refused++;
            var problem = JsonNode.Parse(text)!.AsObject();
            var named = (problem["errors"]?.AsArray() ?? []).Select(e => e?["field"]?.GetValue<string>()).ToList();
            Assert.True(named.Any(n => n is not null && (n.StartsWith(field, StringComparison.Ordinal) || field.StartsWith(n, StringComparison.Ordinal))),
                $"no error names '{field}' for {body}: {text}");
        }
        output.WriteLine($"job bodies: {refused} refused with the field named, {accepted} accepted, 0 server errors");
        Assert.True(refused >= 30);
    }

    /// <summary>Broken records: every one must fail its file with a `Line N` error.</summary>
    static readonly string[] BadRecords =
    [
        "{not json",
        "[]",
        "\"just a string\"",
        """{"messages": []}""",
        """{"messages": [{"role": "user", "content": "hi"}]}""",
        """{"messages": [{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "ok"}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\udc00 tail"}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "\ud800": 1}""",
        """{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "ok"}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}""",
        """{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "ok"}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "tool_calls": []}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "7"}}]}]}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}""",
        """{"messages": [{"role": "user", "content": [{"type": "video"}]}, {"role": "assistant", "content": "ok"}]}""",
        string.Concat(Enumerable.Repeat("[", 100)) + string.Concat(Enumerable.Repeat("]", 100)),
    ];

    [Fact]
    public async Task Every_malformed_dataset_fails_with_line_numbered_errors_and_never_an_internal_error()
    {
        await using var t = await TestServer.StartAsync();
        var random = new Random(20);
        var failed = 0;
        foreach (var bad in BadRecords)
        {
            // The broken record at a random line among good ones.
            var before = random.Next(0, 4);
            var lines = Enumerable.Repeat(TestServer.GoodLine, before).Append(bad).Append(TestServer.GoodLine.Replace("2+2", $"2+{failed}"));
            var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"));
            Assert.Equal(FileStatus.Failed, file.Status);
            var errors = file.Errors!;
            Assert.NotEmpty(errors);
            Assert.All(errors, e => Assert.Equal(before + 1, e.Line));
            Assert.DoesNotContain(errors, e => e.Message.Contains("internal error", StringComparison.OrdinalIgnoreCase));
            failed++;
        }
        output.WriteLine($"datasets: {failed} of {BadRecords.Length} malformed files failed with Line N errors");
    }
}
