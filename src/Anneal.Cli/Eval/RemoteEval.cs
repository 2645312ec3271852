// `anneal eval --model ID`: the same traces as local eval, with the answers from an
// OpenAI-compatible endpoint (OpenAiEndpoint), several prompts in flight so a batching server
// (ours) decodes them together. Traces are written in prompt order whatever order answers arrive.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Cli.Env;
using Anneal.Core.Traces;

namespace Anneal.Cli.Eval;

static class Remote
{
    public static async Task<int> RunAsync(CliContext ctx, ParseResult p, string model, string? baseUrl, string? apiKey, string[] envFiles,
        string promptsArg, string outputArg, int maxNewTokens, int? limit, int concurrency, CancellationToken ct)
    {
        if (maxNewTokens <= 0) return Usage(ctx, $"--max-new-tokens {maxNewTokens}: expected a positive number");
        if (limit is <= 0) return Usage(ctx, $"--limit {limit}: expected a positive number");
        if (concurrency is < 1 or > 64) return Usage(ctx, $"--concurrency {concurrency}: expected 1 to 64");
        var (env, errors) = CliEnvironment.Load(ctx, envFiles);
        if (env is null)
        {
            foreach (var e in errors) ctx.Error.WriteLine($"error: {e}");
            return ExitCodes.Usage;
        }
        var endpointUrl = baseUrl ?? OpenAiEndpoint.FromBackend(env.BackendBaseUrl(null));
        if (!Uri.TryCreate(endpointUrl, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https"))
            return Usage(ctx, $"--base-url {endpointUrl}: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1");
        var promptsPath = ctx.FullPath(promptsArg);
        if (!File.Exists(promptsPath)) return Usage(ctx, $"--prompts {promptsPath}: file not found");
        var report = EvalPrompts.ReadFile(promptsPath);
        if (!report.IsValid)
        {
            ctx.Error.WriteLine($"error: {promptsPath}: {report.TotalErrors} error{(report.TotalErrors == 1 ? "" : "s")}");
            foreach (var e in report.Errors) ctx.Error.WriteLine($"  {e}");
            return ExitCodes.Usage;
        }
        var todo = report.Prompts.Take(limit ?? int.MaxValue).ToList();
        var outputPath = ctx.FullPath(outputArg);

        using var endpoint = new OpenAiEndpoint(endpointUrl, apiKey ?? env.ApiKey);
        ctx.Error.WriteLine($"Answering {todo.Count} prompt{(todo.Count == 1 ? "" : "s")} with {model} at {endpoint.BaseUrl} ({concurrency} at a time)");
        using var gate = new SemaphoreSlim(concurrency);
        var total = Stopwatch.StartNew();
        var done = 0;
        var tasks = todo.Select(async prompt =>
        {
            await gate.WaitAsync(ct);
            try
            {
                var watch = Stopwatch.StartNew();
                var (text, promptTokens, completionTokens) = await endpoint.AnswerAsync(model, prompt.Messages, maxNewTokens, ct);
                watch.Stop();
                var messages = prompt.Messages.DeepClone().AsArray();
                messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = text });
                var score = TraceScoring.Score(text, prompt.Expected);
                lock (gate)
                    ctx.Error.WriteLine($"[{++done}/{todo.Count}] line {prompt.Line}: {completionTokens} tokens in {watch.ElapsedMilliseconds} ms, score {(score is { } s ? s.ToString("0.00") : "-")}");
                return new EvalTrace(EvalTrace.NewId(), model, DateTimeOffset.UtcNow, messages, text, prompt.Expected, score,
                    prompt.Metadata?.DeepClone().AsObject(), new TraceUsage(promptTokens, completionTokens), watch.ElapsedMilliseconds);
            }
            finally { gate.Release(); }
        }).ToList();
        EvalTrace[] traces;
        try { traces = await Task.WhenAll(tasks); }
        catch (EndpointException e)
        {
            ctx.Error.WriteLine($"error: {e.Message}");
            ctx.Error.WriteLine($"{outputPath} was not written.");
            return ExitCodes.Failed;
        }
        total.Stop();
        AtomicJsonl.Write(outputPath, traces.Select(t => t.ToJsonLine()));
        var scored = traces.Where(t => t.Score is not null).ToList();
        var tokens = traces.Sum(t => t.Usage.CompletionTokens);
        var seconds = Math.Max(total.Elapsed.TotalSeconds, 1e-6);
        ctx.Out.WriteLine($"Wrote {traces.Length} trace{(traces.Length == 1 ? "" : "s")} to {outputPath}");
        ctx.Out.WriteLine(scored.Count > 0
            ? $"Mean score: {scored.Average(t => t.Score!.Value):0.000} over {scored.Count} prompt{(scored.Count == 1 ? "" : "s")} with an expected answer ({scored.Count(t => t.Score == 1.0)} exact)"
            : "Mean score: - (no prompt has an expected answer)");
        ctx.Out.WriteLine($"Generated {tokens} tokens in {seconds:0.0} s ({tokens / seconds:0.0} tokens/s) at {endpoint.BaseUrl}");
        return ExitCodes.Ok;
    }

    static int Usage(CliContext ctx, string message)
    {
        ctx.Error.WriteLine($"error: {message}");
        return ExitCodes.Usage;
    }
}
