// `anneal inference run`: the inference process. Alone, it serves the model folders given with
// --model on an OpenAI-compatible /v1; `anneal serve` starts it the same way (key in
// ANNEAL_INFERENCE_KEY, models chosen per request) and forwards /v1 to it. The first line on
// stdout is {"event":"listening","url":...}, for the supervisor.
using System.CommandLine;
using System.Text.Json.Nodes;
using Anneal.Inference;
using Anneal.Inference.Engine;
using Anneal.Training;

namespace Anneal.Cli.Inference;

public static class InferenceCommand
{
    public static Command Create(CliContext ctx)
    {
        var models = new Option<string[]>("--model") { Description = "A model to serve: DIR or ID=DIR (a Hugging Face folder, or a PEFT adapter folder whose base is another --model ID or a folder); repeatable", AllowMultipleArgumentsPerToken = false };
        var urls = new Option<string>("--urls") { Description = "Address to listen on (port 0 picks a free port)", DefaultValueFactory = _ => "http://127.0.0.1:8001" };
        var apiKey = new Option<string?>("--api-key") { Description = "Key clients must send as 'Authorization: Bearer KEY' (default: none, or ANNEAL_INFERENCE_KEY)" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Sequences decoded together per model (KV cache slots)", DefaultValueFactory = _ => 8 };
        var maxLen = new Option<int>("--max-model-len") { Description = "Longest prompt + answer in tokens (capped by the model's context length)", DefaultValueFactory = _ => 4096 };
        var budget = new Option<int>("--adapter-budget-mb") { Description = "LoRA adapters kept in memory per base model, in MiB", DefaultValueFactory = _ => 1024 };
        var device = new Option<string>("--device") { Description = "auto (CUDA when available), cpu or cuda", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("auto", "cpu", "cuda");
        var run = new Command("run", "Serve models on an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models)")
        {
            models, urls, apiKey, maxBatch, maxLen, budget, device,
        };
        run.SetAction(async (p, ct) =>
        {
            var engine = new EngineOptions
            {
                MaxBatch = p.GetValue(maxBatch),
                MaxModelLength = p.GetValue(maxLen),
                AdapterBudgetBytes = (long)p.GetValue(budget) * 1024 * 1024,
                Device = p.GetValue(device)!,
            };
            if (engine.MaxBatch < 1) return Usage(ctx, $"--max-batch {engine.MaxBatch}: expected at least 1");
            if (engine.MaxModelLength < 2) return Usage(ctx, $"--max-model-len {engine.MaxModelLength}: expected at least 2");
            if (engine.AdapterBudgetBytes < 0) return Usage(ctx, $"--adapter-budget-mb {p.GetValue(budget)}: expected 0 or more");
            var url = p.GetValue(urls)!;
            if (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme != "http")
                return Usage(ctx, $"--urls {url}: expected an http:// address such as http://127.0.0.1:8001");
            var supervisedKey = ctx.Environment.GetValueOrDefault(InferenceHost.KeyEnvironmentVariable);
            List<ModelTarget> targets;
            try { targets = ModelCatalog.FromSpecs((p.GetValue(models) ?? []).Select(m => m.Contains('=') ? m[..(m.IndexOf('=') + 1)] + ctx.FullPath(m[(m.IndexOf('=') + 1)..]) : ctx.FullPath(m))); }
            catch (TrainerUserException e) { return Usage(ctx, e.Message); }
            if (targets.Count == 0 && supervisedKey is null) return Usage(ctx, "give at least one --model DIR or ID=DIR to serve");

            RunningInference server;
            try
            {
                server = await InferenceHost.StartAsync(new InferenceOptions
                {
                    Urls = url,
                    ApiKey = p.GetValue(apiKey) ?? supervisedKey,
                    RouteByHeaders = supervisedKey is not null,
                    Models = targets,
                    Engine = engine,
                }, ct);
            }
            catch (IOException e)
            {
                ctx.Error.WriteLine($"error: could not listen on {url}: {e.Message}");
                return ExitCodes.Usage;
            }
            await using var running = server;
            ctx.Out.WriteLine(new JsonObject { ["event"] = "listening", ["url"] = server.BaseUrl }.ToJsonString());
            ctx.Out.Flush();
            if (supervisedKey is null)
            {
                ctx.Error.WriteLine($"Serving {string.Join(", ", targets.Select(t => t.Id))} at {server.BaseUrl}/v1 (OpenAI-compatible). Ctrl+C stops.");
                foreach (var t in targets) ctx.Error.WriteLine($"  {t.Id}: {t.AdapterDir ?? t.BaseDir}{(t.AdapterDir is null ? "" : $" on {t.BaseDir}")}");
            }
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (supervisedKey is not null)
                // stdin is a pipe from `anneal serve`: end of file means the server is gone.
                _ = Task.Run(async () =>
                {
                    while (await ctx.In.ReadLineAsync(stop.Token) is not null) { }
                    stop.Cancel();
                }, CancellationToken.None);
            try { await Task.Delay(Timeout.Infinite, stop.Token); }
            catch (OperationCanceledException) { }
            return 0;
        });
        return new Command("inference", "The inference process: serve models on an OpenAI-compatible API") { Subcommands = { run } };
    }

    static int Usage(CliContext ctx, string message)
    {
        ctx.Error.WriteLine($"error: {message}");
        return ExitCodes.Usage;
    }
}
