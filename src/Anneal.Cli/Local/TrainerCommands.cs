// Commands that run TorchSharp in this process: the trainer the server launches (`anneal trainer
// run`, hidden), training without a server (`train-local`), `tokenize` and `generate`.
using System.CommandLine;
using System.Runtime.InteropServices;
using Anneal.Cli.Train;
using Anneal.Core.Config;
using Anneal.Core.Training;
using Anneal.Training;
using Anneal.Training.Tokenization;

namespace Anneal.Cli.Local;

public static class TrainerCommands
{
    /// <summary>`anneal trainer run --spec PATH`: what the server starts for each job.</summary>
    public static Command Trainer(CliContext ctx)
    {
        var spec = new Option<string>("--spec") { Description = "Job spec (JSON) written by the server", Required = true };
        var run = new Command("run", "Run one training job from a spec file; events as JSON lines on stdout") { spec };
        run.SetAction(async (p, ct) =>
        {
            var path = ctx.FullPath(p.GetValue(spec)!);
            if (!File.Exists(path))
            {
                ctx.Error.WriteLine($"error: --spec {path}: file not found");
                return TrainerProcess.ExitUserError;
            }
            // Cancellation (SIGTERM/SIGINT → ct, see AnnealApp.MainAsync) stops at the next optimizer step.
            // SIGUSR1 (pause, server shutdown) and the server's death stop there too, after a checkpoint.
            using var checkpointAndStop = new CancellationTokenSource();
            using var usr1 = OperatingSystem.IsWindows() ? null : PosixSignalRegistration.Create((PosixSignal)TrainerProtocol.CheckpointAndStopSignal, c =>
            {
                c.Cancel = true;
                checkpointAndStop.Cancel();
            });
            using var watch = ServerWatch.Start(ctx.Environment, reason =>
            {
                checkpointAndStop.Cancel();
                try { ctx.Error.WriteLine($"stopping after a checkpoint: {reason}"); }
                catch (IOException) { } // the server's end of the pipe is gone with it
            }, watchStdin: ctx.In == Console.In && RankLaunch.FromEnvironment().Rank == 0);   // mpirun gives stdin to rank 0 only
            return await TrainerProcess.RunAsync(path, ctx.Out, ctx.Error, ct, new TrainerOptions { CheckpointAndStop = checkpointAndStop.Token });
        });
        return new Command("trainer", "The trainer process started by the server") { Hidden = true, Subcommands = { run } };
    }

    /// <summary>`anneal train-local`: fine-tune a local model folder without a server.</summary>
    public static Command TrainLocal(CliContext ctx)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json, safetensors, tokenizer.json)", Required = true };
        var dataset = new Option<string>("--dataset") { Description = "JSONL chat dataset", Required = true };
        var config = new Option<string>("--config") { Description = "Training config (TOML); [hyperparameters] and [training] are used", Required = true };
        var output = new Option<string>("--output") { Description = "Folder for checkpoints/ and final/", Required = true };
        var device = new Option<string>("--device") { Description = "auto (CUDA when available), cpu or cuda", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("auto", "cpu", "cuda");
        var command = new Command("train-local", "Fine-tune a local model folder in this process, without a server") { model, dataset, config, output, device };
        command.SetAction(async (p, ct) =>
        {
            var configPath = ctx.FullPath(p.GetValue(config)!);
            if (!File.Exists(configPath))
            {
                ctx.Error.WriteLine($"error: --config {configPath}: file not found");
                return ExitCodes.Usage;
            }
            var (cfg, errors) = TrainingConfigLoader.Load(configPath);
            if (cfg is null || errors.Count > 0)
            {
                ctx.Error.WriteLine($"error: config {configPath} is invalid:");
                foreach (var e in errors) ctx.Error.WriteLine($"  {e}");
                return ExitCodes.Usage;
            }
            foreach (var w in cfg.Warnings) ctx.Error.WriteLine($"warning: {w}");
            var settings = cfg.Settings.Training;
            var configDir = Path.GetDirectoryName(configPath)!;
            var (datasetPath, datasetError) = DatasetPaths.Resolve(p.GetValue(dataset)!, ctx.WorkingDirectory, configDir, "--dataset");
            if (datasetPath is null)
            {
                ctx.Error.WriteLine($"error: {datasetError}");
                return ExitCodes.Usage;
            }
            string? validationPath = null;
            if (cfg.ValidationPath is { } v)
            {
                (validationPath, var validationError) = DatasetPaths.Resolve(v, ctx.WorkingDirectory, configDir, "[data].validation_path");
                if (validationPath is null)
                {
                    ctx.Error.WriteLine($"error: {validationError}");
                    return ExitCodes.Usage;
                }
            }
            var modelDir = ctx.FullPath(p.GetValue(model)!);
            var spec = new TrainerJobSpec(
                JobId: $"local-{DateTime.UtcNow:yyyyMMddHHmmss}",
                Model: cfg.Model,
                ModelPath: modelDir,
                TrainingFile: datasetPath,
                ValidationFile: validationPath,
                OutputDir: ctx.FullPath(p.GetValue(output)!),
                Settings: settings,
                Device: p.GetValue(device)!,
                BaseModelName: modelDir,
                LocalImageFiles: true);
            return await TrainerProcess.RunAsync(spec, ctx.Out, ctx.Error, ct);
        });
        return command;
    }

    /// <summary>`anneal tokenize --model DIR [--chat]`: stdin → token ids (and the loss mask with --chat).</summary>
    public static Command Tokenize(CliContext ctx)
    {
        var model = new Option<string>("--model") { Description = "Model folder holding tokenizer.json and tokenizer_config.json", Required = true };
        var chat = new Option<bool>("--chat") { Description = "Read one JSONL chat record; render the chat template and print the trained-token mask" };
        var command = new Command("tokenize", "Tokenize text from stdin with a model's tokenizer and print the ids as JSON") { model, chat };
        command.SetAction(p =>
        {
            var dir = ctx.FullPath(p.GetValue(model)!);
            if (!Directory.Exists(dir))
            {
                ctx.Error.WriteLine($"error: --model {dir}: folder not found");
                return ExitCodes.Usage;
            }
            return TokenizeTool.Run(dir, p.GetValue(chat), ctx.In, ctx.Out, ctx.Error);
        });
        return command;
    }

    /// <summary>`anneal generate --model DIR --prompt TEXT`: one answer from a model folder.</summary>
    public static Command Generate(CliContext ctx)
    {
        var model = new Option<string>("--model") { Description = "Model folder (a base model, a job's final/ folder, or a LoRA job's final/ with final/merged/), or a model id answered by the server's /v1", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "The user message to answer", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest answer, in tokens", DefaultValueFactory = _ => 48 };
        var baseUrl = new Option<string?>("--base-url") { Description = "OpenAI-compatible endpoint for a model id (default: the Anneal server's /v1, from BACKEND_BASE_URL)" };
        var images = new Option<string[]>("--image") { Description = "An image file shown before the prompt (Qwen3-VL models; repeatable)", AllowMultipleArgumentsPerToken = false };
        var command = new Command("generate", "Answer one prompt with a local model folder (greedy decoding), or with a model id through /v1") { model, prompt, maxNew, baseUrl, images };
        command.SetAction(async (p, ct) =>
        {
            var dir = ctx.FullPath(p.GetValue(model)!);
            if (p.GetValue(baseUrl) is not null || (!Directory.Exists(dir) && Eval.OpenAiEndpoint.IsModelId(p.GetValue(model)!)))
                return await GenerateRemote(ctx, p.GetValue(model)!, p.GetValue(prompt)!, p.GetValue(maxNew), p.GetValue(baseUrl),
                    (p.GetValue(images) ?? []).Select(ctx.FullPath).ToList(), ct);
            if (!Directory.Exists(dir))
            {
                ctx.Error.WriteLine($"error: --model {dir}: folder not found");
                return ExitCodes.Usage;
            }
            if (p.GetValue(maxNew) is var n && n <= 0)
            {
                ctx.Error.WriteLine($"error: --max-new-tokens {n}: expected a positive number");
                return ExitCodes.Usage;
            }
            // A LoRA job's final/ holds the adapter, whose base is a registry id (not a folder here);
            // its full model is final/merged. An adapter over a local base folder loads as it is.
            var adapterConfig = Path.Combine(dir, "adapter_config.json");
            if (File.Exists(adapterConfig) && !File.Exists(Path.Combine(dir, "config.json")) && !HasLocalBase(adapterConfig))
            {
                var merged = Path.Combine(dir, "merged");
                if (!File.Exists(Path.Combine(merged, "config.json")))
                {
                    ctx.Error.WriteLine($"error: --model {dir} holds a LoRA adapter whose base model is not a folder here, and no merged model ({merged} is missing);");
                    ctx.Error.WriteLine("  pass a full model folder: a full fine-tune's final/, or the final/merged/ folder of a LoRA job that merged its adapter.");
                    return ExitCodes.Usage;
                }
                ctx.Error.WriteLine($"note: {dir} holds a LoRA adapter; answering with its merged model {merged}");
                dir = merged;
            }
            var answer = new StringWriter();
            var imagePaths = (p.GetValue(images) ?? []).Select(ctx.FullPath).ToList();
            var code = await TrainerProcess.GenerateAsync(dir, p.GetValue(prompt)!, p.GetValue(maxNew), answer, ctx.Error, ct, imagePaths);
            ctx.Out.Write(WithoutEmptyThink(answer.ToString()));
            return code;
        });
        return command;
    }

    /// <summary>The greedy answer of a model id from an OpenAI-compatible endpoint (the server's /v1 by default).</summary>
    static async Task<int> GenerateRemote(CliContext ctx, string model, string prompt, int maxNewTokens, string? baseUrl, IReadOnlyList<string> imagePaths, CancellationToken ct)
    {
        if (maxNewTokens <= 0)
        {
            ctx.Error.WriteLine($"error: --max-new-tokens {maxNewTokens}: expected a positive number");
            return ExitCodes.Usage;
        }
        // Images go as data: URIs in image_url parts, before the text (as `generate --image` on a folder).
        var content = new System.Text.Json.Nodes.JsonArray();
        foreach (var path in imagePaths)
        {
            if (!File.Exists(path))
            {
                ctx.Error.WriteLine($"error: --image {path}: file not found");
                return ExitCodes.Usage;
            }
            var bytes = await File.ReadAllBytesAsync(path, ct);
            if (Anneal.Core.Vision.ImageDecoder.Sniff(bytes) is not { } format)
            {
                ctx.Error.WriteLine($"error: --image {path}: not a PNG, JPEG, WebP or GIF image");
                return ExitCodes.Usage;
            }
            content.Add(new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = "image_url",
                ["image_url"] = new System.Text.Json.Nodes.JsonObject { ["url"] = $"data:image/{format};base64,{Convert.ToBase64String(bytes)}" },
            });
        }
        var (env, errors) = Env.CliEnvironment.Load(ctx, []);
        if (env is null)
        {
            foreach (var e in errors) ctx.Error.WriteLine($"error: {e}");
            return ExitCodes.Usage;
        }
        using var endpoint = new Eval.OpenAiEndpoint(baseUrl ?? Eval.OpenAiEndpoint.FromBackend(env.BackendBaseUrl(null)), env.ApiKey);
        ctx.Error.WriteLine($"note: {model} is not a folder here; answering with it at {endpoint.BaseUrl}");
        try
        {
            System.Text.Json.Nodes.JsonNode userContent = prompt;
            if (content.Count > 0)
            {
                content.Add(new System.Text.Json.Nodes.JsonObject { ["type"] = "text", ["text"] = prompt });
                userContent = content;
            }
            var messages = new System.Text.Json.Nodes.JsonArray(new System.Text.Json.Nodes.JsonObject { ["role"] = "user", ["content"] = userContent });
            var (text, _, _) = await endpoint.AnswerAsync(model, messages, maxNewTokens, ct);
            ctx.Out.WriteLine(WithoutEmptyThink(text));
            return ExitCodes.Ok;
        }
        catch (Eval.EndpointException e)
        {
            ctx.Error.WriteLine($"error: {e.Message}");
            return ExitCodes.Failed;
        }
    }

    /// <summary>Qwen3's chat template opens the answer with an empty `<think>\n\n</think>` when not thinking; it is noise here.</summary>
    public static string WithoutEmptyThink(string answer) =>
        System.Text.RegularExpressions.Regex.Replace(answer, @"^\s*<think>\s*</think>\s*", "");

    static bool HasLocalBase(string adapterConfig)
    {
        try
        {
            var path = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(adapterConfig))?["base_model_name_or_path"]?.GetValue<string>();
            return path is not null && Directory.Exists(path);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or IOException)
        {
            return false;
        }
    }
}
