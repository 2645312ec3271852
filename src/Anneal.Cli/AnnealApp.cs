// The `anneal` command tree. Each feature folder builds its own commands from a CliContext, so a
// test runs exactly what a user runs, with captured output: AnnealApp.RunAsync(args, ctx, ct).
using System.CommandLine;
using System.CommandLine.Invocation;
using System.Runtime.InteropServices;
using Anneal.Cli.Demo;
using Anneal.Cli.Deploy;
using Anneal.Cli.Eval;
using Anneal.Cli.Files;
using Anneal.Cli.Filter;
using Anneal.Cli.Inference;
using Anneal.Cli.Jobs;
using Anneal.Cli.Local;
using Anneal.Cli.Models;
using Anneal.Cli.Serve;
using Anneal.Cli.Setup;
using Anneal.Cli.Train;

namespace Anneal.Cli;

public static class AnnealApp
{
    public static RootCommand Build(CliContext ctx)
    {
        var shared = new SharedOptions();
        var root = new RootCommand(
            "anneal: fine-tune Qwen3 models on your own machine or server.\n" +
            "Quick start: `anneal demo`; or `anneal serve`, `anneal setup`, then\n" +
            "`anneal train --type sft --config train.toml --dataset data.jsonl`.")
        {
            TrainCommand.Create(ctx, shared),
            SetupCommand.Create(ctx, shared),
            KeysCommand.Create(ctx, shared),
            ServeCommand.Create(ctx, shared),
            DemoCommand.Create(ctx, shared),
            JobsCommand.Create(ctx, shared),
            FilesCommand.Create(ctx, shared),
            ModelsCommand.Create(ctx, shared),
            TrainerCommands.Trainer(ctx),
            TrainerCommands.TrainLocal(ctx),
            TrainerCommands.Tokenize(ctx),
            TrainerCommands.Generate(ctx),
            EvalCommand.Create(ctx),
            FilterCommand.Create(ctx),
            InferenceCommand.Create(ctx),
            DeployCommand.Create(ctx, shared),
            Anneal.Cli.Worker.WorkerCommand.Create(ctx, shared),
        };
        return root;
    }

    /// <summary>Parses and runs; parse errors print the offending token and exit 2.</summary>
    public static async Task<int> RunAsync(string[] args, CliContext ctx, CancellationToken ct = default)
    {
        var root = Build(ctx);
        var result = root.Parse(args);
        var config = new InvocationConfiguration
        {
            Output = ctx.Out,
            Error = ctx.Error,
            // Signals are turned into `ct` by Program.Main, so that long actions (serve, trainer)
            // can finish cleanly instead of being cut off after a fixed grace period.
            ProcessTerminationTimeout = null,
            // Exceptions reach the handlers below, so an interruption is reported the same way by
            // every command (the library's own handler turned it into a silent exit code 1).
            EnableDefaultExceptionHandler = false,
        };
        if (result.Errors.Count > 0)
        {
            ParseErrors.Print(result, ctx.Error);
            var command = string.Join(' ', result.CommandResult.Command is RootCommand ? [] : CommandPath(result.CommandResult.Command));
            ctx.Error.WriteLine($"Run `anneal {(command.Length > 0 ? command + " " : "")}--help` for usage.");
            return ExitCodes.Usage;
        }
        try
        {
            return await result.InvokeAsync(config, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            ctx.Error.WriteLine("Interrupted.");
            return ExitCodes.Interrupted;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A bug, not a user error: say what happened, with the trace for a report.
            ctx.Error.WriteLine($"error: unexpected {e.GetType().Name}: {e.Message}");
            ctx.Error.WriteLine(e.ToString());
            return ExitCodes.Failed;
        }
    }

    static IEnumerable<string> CommandPath(Command command)
    {
        var names = new List<string>();
        for (Symbol? s = command; s is Command c and not RootCommand; s = c.Parents.FirstOrDefault())
            names.Insert(0, c.Name);
        return names;
    }

    /// <summary>Entry point of the real process: Ctrl+C and SIGTERM cancel the running command.</summary>
    public static async Task<int> MainAsync(string[] args)
    {
        using var cts = new CancellationTokenSource();
        void Cancel(PosixSignalContext signal)
        {
            // The first signal asks the command to stop cleanly; a second one ends the process.
            if (cts.IsCancellationRequested) return;
            signal.Cancel = true;
            cts.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Cancel);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Cancel);
        return await RunAsync(args, CliContext.FromProcess(), cts.Token);
    }
}
