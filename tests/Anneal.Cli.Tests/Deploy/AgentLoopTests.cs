// The spec's agent loop closed on one server, as a user runs it: examples/agent_loop.sh drives
// the real `anneal` (eval through /v1 → filter → train → deploy → eval) against a server that
// starts real trainer processes and its own inference process. Two rounds on the tiny model, as
// the example runs by default (examples/agent_loop.toml: 40 steps of a full fine-tune per round).
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Anneal.Cli.Tests.Deploy;

[Collection("trainer")]
public class AgentLoopTests
{
    static string RepoRoot()
    {
        for (var dir = AppContext.BaseDirectory; dir is not null; dir = Path.GetDirectoryName(dir))
            if (File.Exists(Path.Combine(dir, "Anneal.slnx"))) return dir;
        throw new DirectoryNotFoundException("Anneal.slnx not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public async Task The_example_loop_raises_the_score_and_the_fine_tuned_model_answers_on_v1()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = new CliSandbox();
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = box.Dir };
        psi.ArgumentList.Add(Path.Combine(RepoRoot(), "examples", "agent_loop.sh"));
        psi.Environment["ANNEAL"] = string.Join(' ', CliContext.SelfCommandOfThisProcess());   // word-split by the script: no spaces in these paths
        psi.Environment["SYNTH_API_KEY"] = server.ApiKey;
        psi.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        psi.Environment["ROUNDS"] = "2";
        psi.Environment["WORK"] = Path.Combine(box.Dir, "work");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        await process.WaitForExitAsync(timeout.Token);
        var log = $"{await stdout}\n--- stderr ---\n{await stderr}";
        Assert.True(process.ExitCode == 0, log);

        var scores = File.ReadAllLines(Path.Combine(box.Dir, "work", "scores.txt"));
        double Score(string line) => double.Parse(line.Split(' ')[line.StartsWith("round") ? 3 : 2], System.Globalization.CultureInfo.InvariantCulture);
        // round 1 (the base model), round 2 (after one round of training), final (after two).
        Assert.Equal(3, scores.Length);
        var before = Score(scores[0]);
        var afterOne = Score(scores[1]);
        var after = Score(scores[2]);
        Assert.True(afterOne > before + 0.3, string.Join('\n', scores) + "\n" + log);
        Assert.True(after > before + 0.3, string.Join('\n', scores) + "\n" + log);
        Assert.NotEqual(scores[1].Split('(', ')')[1], scores[2].Split('(', ')')[1]);   // round 2 trained a new model
        var model = scores.Last().Split('(', ')')[1];
        Assert.StartsWith("fft:anneal/tiny-qwen3:job_", model);

        // The printed fine_tuned_model answers any OpenAI-style client on the server's /v1.
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.ApiKey);
        var response = await http.PostAsJsonAsync(server.BaseUrl + "/v1/chat/completions", new JsonObject
        {
            ["model"] = model,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Name the chemical symbol for gold." }),
            ["temperature"] = 0,
            ["max_tokens"] = 16,
        });
        var answer = (await response.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.True(response.IsSuccessStatusCode, answer.ToJsonString());
        Assert.Contains("Au", answer["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        var deployments = await http.GetFromJsonAsync<JsonObject>(server.BaseUrl + "/api/learning/deployments");
        Assert.Contains(deployments!["data"]!.AsArray(), d => d!["model"]!.GetValue<string>() == model && d["status"]!.GetValue<string>() == "ready");
    }
}
