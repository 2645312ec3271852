// `anneal demo`: the whole loop on a fresh machine with no set-up. Starts an embedded server on a
// free loopback port with its own data folder, takes the first API key, writes a small dataset
// and TOML, runs the same train flow as `anneal train` through the real HTTP API on the built-in
// tiny model, then answers a prompt with the fine-tuned model (`anneal generate` in a child
// process, as a user would).
using System.CommandLine;
using System.Diagnostics;
using Anneal.Cli.Env;
using Anneal.Cli.Setup;
using Anneal.Cli.Train;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Server;

namespace Anneal.Cli.Demo;

public static class DemoCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var keep = new Option<bool>("--keep") { Description = "Keep the temporary data folder (database, job logs, the fine-tuned model)" };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps to train", DefaultValueFactory = _ => 40 };
        var interval = new Option<double>("--poll-interval") { Description = "Seconds between status checks", DefaultValueFactory = _ => 0.5 };
        // Not the shared --data-dir: the demo's default is a temporary folder, not ~/.anneal.
        var dataDirOption = new Option<string?>("--data-dir") { HelpName = "DIR", Description = "Data folder to use and keep (default: a new temporary folder, removed at the end unless --keep)" };
        var vision = new Option<bool>("--vision") { Description = "Fine-tune the built-in tiny Qwen3-VL model on pictures instead, and ask it about one" };
        var command = new Command("demo", "Fine-tune the built-in tiny model end to end on this machine (no set-up) and show an answer")
        {
            dataDirOption, keep, steps, interval, vision,
        };
        command.SetAction(async (p, ct) =>
        {
            if (p.GetValue(steps) is var s && s <= 0)
            {
                ctx.Error.WriteLine($"error: --steps {s}: expected a positive number");
                return ExitCodes.Usage;
            }
            var given = p.GetValue(dataDirOption);
            return await RunAsync(ctx, given is null ? null : ctx.FullPath(given), p.GetValue(keep), s, p.GetValue(interval), ct, p.GetValue(vision));
        });
        return command;
    }

    public static async Task<int> RunAsync(CliContext ctx, string? dataDir, bool keep, int steps, double pollInterval, CancellationToken ct, bool vision = false)
    {
        // A folder we created is removed at the end unless --keep; one the user named is never removed.
        var temporary = dataDir is null;
        dataDir ??= Path.Combine(Path.GetTempPath(), $"anneal-demo-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(dataDir);
        try
        {
            ctx.Out.WriteLine($"Starting an Anneal server (data folder {dataDir}) ...");
            await using var server = await ServerHost.StartAsync(new ServerOptions
            {
                Urls = "http://127.0.0.1:0",
                DataDir = dataDir,
                TrainerCommand = ctx.SelfCommand,
                MaxConcurrentJobs = 1,
            }, ct);
            var key = server.FirstApiKey ?? await LocalKeys.CreateAsync(dataDir, "demo", ct);
            ctx.Out.WriteLine($"Server listening on {server.BaseUrl}.");
            // The demo's key is as temporary as its server; printing it lets the console be opened at once.
            ctx.Out.WriteLine($"Watch the training curve live in the web console at {server.BaseUrl}/ (sign in with the key {key}).");

            var demoDir = Path.Combine(dataDir, "demo");
            Directory.CreateDirectory(demoDir);
            var datasetPath = Path.Combine(demoDir, "demo_sft.jsonl");
            var configPath = Path.Combine(demoDir, "train.toml");
            var model = vision ? ModelRegistry.TinyVisionModelId : ModelRegistry.TinyModelId;
            await File.WriteAllTextAsync(datasetPath, vision ? VisionDemoData.Write(demoDir) : DemoData.Dataset(), ct);
            await File.WriteAllTextAsync(configPath, vision ? VisionDemoData.Config(model, "demo_sft.jsonl", steps) : DemoData.Config(model, "demo_sft.jsonl", steps), ct);
            ctx.Out.WriteLine($"Wrote {datasetPath} and {configPath}.");
            ctx.Out.WriteLine($"Training {model} (full fine-tune, {steps} steps):");
            ctx.Out.WriteLine($"  anneal train --type sft --config {configPath} --backend {server.BaseUrl}");

            var env = new Dictionary<string, string>(ctx.Environment) { [CliEnvironment.ApiKeyVariable] = key };
            var trainCtx = new CliContext
            {
                Out = ctx.Out, Error = ctx.Error, In = ctx.In, Console = ctx.Console, IsTerminal = ctx.IsTerminal,
                WorkingDirectory = demoDir, Environment = env, SelfCommand = ctx.SelfCommand,
            };
            var outcome = await TrainFlow.RunAsync(new TrainRequest
            {
                ConfigPath = configPath,
                Backend = server.BaseUrl,
                PollIntervalSeconds = pollInterval,
            }, trainCtx, ct);
            if (outcome.ExitCode != ExitCodes.Ok || outcome.Job is not { Status: JobStatus.Succeeded } job)
            {
                ctx.Error.WriteLine($"The demo job did not succeed; the trainer's log is in {Path.Combine(dataDir, "jobs")}.");
                keep = true;
                return outcome.ExitCode == ExitCodes.Ok ? ExitCodes.Failed : outcome.ExitCode;
            }

            var finalDir = Path.Combine(dataDir, "jobs", job.Id, "output", "final");
            var picture = Path.Combine(demoDir, $"{VisionDemoData.Colours[2].Name}.png");
            ctx.Out.WriteLine(vision ? $"Asking the fine-tuned model about {picture}: \"{VisionDemoData.Prompt}\"" : $"Asking the fine-tuned model: \"{DemoData.Prompt}\"");
            var (code, answer, errors) = await RunChildAsync(ctx.SelfCommand, vision
                ? ["generate", "--model", finalDir, "--image", picture, "--prompt", VisionDemoData.Prompt, "--max-new-tokens", "16"]
                : ["generate", "--model", finalDir, "--prompt", DemoData.Prompt, "--max-new-tokens", "30"], ct);
            if (code != 0)
            {
                ctx.Error.WriteLine($"error: `anneal generate` exited with {code}:");
                ctx.Error.WriteLine(errors.TrimEnd());
                keep = true;
                return ExitCodes.Failed;
            }
            ctx.Out.WriteLine($"Answer: {string.Join(' ', answer.Split((char[])['\n', '\r'], StringSplitOptions.RemoveEmptyEntries)).Trim()}");
            ctx.Out.WriteLine($"(the dataset's answer: \"{(vision ? VisionDemoData.Answer(VisionDemoData.Colours[2].Name) : DemoData.Facts[0].Answer)}\")");
            ctx.Out.WriteLine($"fine_tuned_model: {job.FineTunedModel}");
            // A temporary folder is deleted below: name the model folder only when it stays.
            if (keep || !temporary) ctx.Out.WriteLine($"model folder: {finalDir}");
            else ctx.Out.WriteLine("The data folder and the model are removed now; run `anneal demo --keep` to keep them.");
            return ExitCodes.Ok;
        }
        finally
        {
            if (temporary && !keep)
            {
                try { Directory.Delete(dataDir, recursive: true); }
                catch (IOException) { ctx.Error.WriteLine($"note: could not remove {dataDir}"); }
            }
            else ctx.Out.WriteLine($"Data folder kept: {dataDir}");
        }
    }

    /// <summary>Runs this executable again with the given arguments; returns exit code, stdout, stderr.</summary>
    public static async Task<(int Code, string Out, string Err)> RunChildAsync(IReadOnlyList<string> self, IEnumerable<string> args, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(args)) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {self[0]}");
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        try
        {
            await process.WaitForExitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
