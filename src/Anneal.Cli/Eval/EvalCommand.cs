// `anneal eval`: answer every prompt of a JSONL file with a local model folder (greedy decoding, in
// this process, like `anneal generate`), or with a model id (a base model or a fine_tuned_model)
// through an OpenAI-compatible endpoint (the server's /v1 by default, --base-url for any other), and write one trace per prompt (Core/Traces/EvalTrace.cs), scored
// against the prompt's `expected` answer (TraceScoring). Single-turn only: there is no task app or
// environment to act in, so a trace is one prompt and one generated reply.
using System.CommandLine;
using System.Diagnostics;
using Anneal.Core.Traces;
using Anneal.Training;

namespace Anneal.Cli.Eval;

public static class EvalCommand
{
    public static Command Create(CliContext ctx)
    {
        var model = new Option<string>("--model") { Description = "Model folder (a base model or a job's final/ or final/merged/), or a model id (fine_tuned_model, base id) answered by --base-url", Required = true };
        var baseUrl = new Option<string?>("--base-url") { Description = "OpenAI-compatible endpoint for a model id (default: the Anneal server's /v1, from BACKEND_BASE_URL)" };
        var apiKey = new Option<string?>("--api-key") { Description = "Key for --base-url (default: SYNTH_API_KEY)" };
        var concurrency = new Option<int>("--concurrency") { Description = "Prompts in flight at once against an endpoint (the server batches them)", DefaultValueFactory = _ => 4 };
        var envFile = new Option<string[]>("--env-file") { Description = "Extra .env file(s) for SYNTH_API_KEY / BACKEND_BASE_URL" };
        var prompts = new Option<string>("--prompts") { Description = "JSONL prompts: {\"messages\": [... ending with the user's turn], \"expected\"?: \"...\", \"metadata\"?: {...}}", Required = true };
        var output = new Option<string>("--output") { Description = "Traces file to write (JSONL, one trace per prompt)", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest answer, in tokens", DefaultValueFactory = _ => 128 };
        var limit = new Option<int?>("--limit") { Description = "Only the first N prompts" };
        var device = new Option<string>("--device") { Description = "auto (CUDA when available), cpu or cuda", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("auto", "cpu", "cuda");
        var command = new Command("eval",
            "Answer each prompt with a local model (greedy) and write scored traces for `anneal filter`.\n" +
            "Score: 1 for an exact match with \"expected\" after whitespace normalising, else the token-overlap F1;\n" +
            "null without \"expected\". Single-turn prompts only: no task app or environment is simulated.")
        { model, prompts, output, maxNew, limit, device, baseUrl, apiKey, concurrency, envFile };
        command.SetAction(async (p, ct) =>
        {
            var modelArg = p.GetValue(model)!;
            var modelDir = ctx.FullPath(modelArg);
            // A model id (not a folder here) or an explicit endpoint: answer through /v1.
            if (p.GetValue(baseUrl) is not null || (!Directory.Exists(modelDir) && OpenAiEndpoint.IsModelId(modelArg)))
                return await Remote.RunAsync(ctx, p, modelArg, p.GetValue(baseUrl), p.GetValue(apiKey), p.GetValue(envFile) ?? [],
                    p.GetValue(prompts)!, p.GetValue(output)!, p.GetValue(maxNew), p.GetValue(limit), p.GetValue(concurrency), ct);
            if (!Directory.Exists(modelDir))
            {
                ctx.Error.WriteLine($"error: --model {modelDir}: folder not found");
                return ExitCodes.Usage;
            }
            if (!File.Exists(Path.Combine(modelDir, "config.json")) && !File.Exists(Path.Combine(modelDir, "adapter_config.json")))
            {
                var hint = Directory.Exists(Path.Combine(modelDir, "final")) ? $" (a job's output folder? use {Path.Combine(modelArg, "final")})" : "";
                ctx.Error.WriteLine($"error: --model {modelDir}: not a model folder: no config.json or adapter_config.json{hint}");
                return ExitCodes.Usage;
            }
            if (p.GetValue(maxNew) is var n && n <= 0)
            {
                ctx.Error.WriteLine($"error: --max-new-tokens {n}: expected a positive number");
                return ExitCodes.Usage;
            }
            if (p.GetValue(limit) is { } l && l <= 0)
            {
                ctx.Error.WriteLine($"error: --limit {l}: expected a positive number");
                return ExitCodes.Usage;
            }
            var promptsPath = ctx.FullPath(p.GetValue(prompts)!);
            if (!File.Exists(promptsPath))
            {
                ctx.Error.WriteLine($"error: --prompts {promptsPath}: file not found");
                return ExitCodes.Usage;
            }
            var report = EvalPrompts.ReadFile(promptsPath);
            if (!report.IsValid)
            {
                ctx.Error.WriteLine($"error: {promptsPath}: {report.TotalErrors} error{(report.TotalErrors == 1 ? "" : "s")}");
                foreach (var e in report.Errors) ctx.Error.WriteLine($"  {e}");
                if (report.TotalErrors > report.Errors.Count) ctx.Error.WriteLine($"  ... first {report.Errors.Count} shown");
                return ExitCodes.Usage;
            }
            var todo = report.Prompts.Take(p.GetValue(limit) ?? int.MaxValue).ToList();
            // TorchSharp work runs on its own thread, as in TrainerProcess.GenerateAsync.
            return await Task.Factory.StartNew(
                () => Run(ctx, modelArg, modelDir, p.GetValue(device)!, todo, n, ctx.FullPath(p.GetValue(output)!), ct),
                CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        });
        return command;
    }

    static int Run(CliContext ctx, string modelName, string modelDir, string device, List<EvalPrompt> prompts, int maxNewTokens, string outputPath, CancellationToken ct)
    {
        ChatGenerator generator;
        try { generator = ChatGenerator.Open(modelDir, device); }
        catch (TrainerUserException e)
        {
            ctx.Error.WriteLine($"error: {e.Message}");
            return ExitCodes.Usage;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Text.Json.JsonException or UnauthorizedAccessException)
        {
            ctx.Error.WriteLine($"error: --model {modelDir}: the model could not be loaded: {e.Message}");
            return ExitCodes.Usage;
        }
        using (generator)
        {
            var traces = new List<EvalTrace>();
            var total = Stopwatch.StartNew();
            for (var i = 0; i < prompts.Count; i++)
            {
                if (ct.IsCancellationRequested)
                {
                    ctx.Error.WriteLine($"Interrupted after {i} of {prompts.Count} prompts; {outputPath} was not written.");
                    return ExitCodes.Interrupted;
                }
                var prompt = prompts[i];
                var watch = Stopwatch.StartNew();
                var answer = generator.Answer(prompt.Messages, maxNewTokens, ct);
                watch.Stop();
                var messages = prompt.Messages.DeepClone().AsArray();
                messages.Add(new System.Text.Json.Nodes.JsonObject { ["role"] = "assistant", ["content"] = answer.Text });
                var score = TraceScoring.Score(answer.Text, prompt.Expected);
                traces.Add(new EvalTrace(EvalTrace.NewId(), modelName, DateTimeOffset.UtcNow, messages, answer.Text, prompt.Expected, score,
                    prompt.Metadata?.DeepClone().AsObject(), new TraceUsage(answer.PromptTokens, answer.CompletionTokens), watch.ElapsedMilliseconds));
                ctx.Error.WriteLine($"[{i + 1}/{prompts.Count}] line {prompt.Line}: {answer.CompletionTokens} tokens in {watch.ElapsedMilliseconds} ms, score {(score is { } s ? s.ToString("0.00") : "-")}");
            }
            total.Stop();
            AtomicJsonl.Write(outputPath, traces.Select(t => t.ToJsonLine()));

            var scored = traces.Where(t => t.Score is not null).ToList();
            var tokens = traces.Sum(t => t.Usage.CompletionTokens);
            var seconds = Math.Max(total.Elapsed.TotalSeconds, 1e-6);
            ctx.Out.WriteLine($"Wrote {traces.Count} trace{(traces.Count == 1 ? "" : "s")} to {outputPath}");
            ctx.Out.WriteLine(scored.Count > 0
                ? $"Mean score: {scored.Average(t => t.Score!.Value):0.000} over {scored.Count} prompt{(scored.Count == 1 ? "" : "s")} with an expected answer ({scored.Count(t => t.Score == 1.0)} exact)"
                : "Mean score: - (no prompt has an expected answer)");
            ctx.Out.WriteLine($"Generated {tokens} tokens in {seconds:0.0} s ({tokens / seconds:0.0} tokens/s) on {generator.Device}");
            return ExitCodes.Ok;
        }
    }
}
