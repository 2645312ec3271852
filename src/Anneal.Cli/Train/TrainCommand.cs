// `anneal train --type sft --config PATH --dataset PATH [flags]` (spec §2, DESIGN.md §4).
using System.CommandLine;

namespace Anneal.Cli.Train;

public static class TrainCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var type = new Option<string>("--type") { HelpName = "TYPE", Description = "Training type; only 'sft' (supervised fine-tuning) is supported", DefaultValueFactory = _ => "sft" };
        var config = new Option<string>("--config", "-c") { HelpName = "PATH", Description = "Training config (TOML): [job], [training], [hyperparameters]", Required = true };
        var dataset = new Option<string?>("--dataset", "-d") { HelpName = "PATH", Description = "JSONL chat dataset (default: [job].data of the config)" };
        var validation = new Option<string?>("--validation") { HelpName = "PATH", Description = "JSONL validation set (default: [data].validation_path of the config)" };
        var model = new Option<string?>("--model") { HelpName = "ID", Description = "Base model to fine-tune, overriding [job].model (see `anneal models`)" };
        var examples = new Option<int?>("--examples") { HelpName = "N", Description = "Upload only the first N records of the dataset (smoke tests)" };
        var noPoll = new Option<bool>("--no-poll") { Description = "Submit the job and exit; re-run later with --no-poll to see its status" };
        var pollTimeout = new Option<double?>("--poll-timeout") { HelpName = "SECONDS", Description = "Give up following after S seconds (exit 3; default: [job].poll_seconds)" };
        var pollInterval = new Option<double>("--poll-interval") { HelpName = "SECONDS", Description = "Seconds between status checks", DefaultValueFactory = _ => 2 };
        var dryRun = new Option<bool>("--dry-run") { Description = "Validate and print the exact upload and job payload; send nothing" };
        var suffix = new Option<string?>("--suffix") { HelpName = "NAME", Description = "A short name added to the fine-tuned model id" };

        var command = new Command("train", "Validate a dataset, upload it, start a fine-tuning job from a TOML config and follow it to the end")
        {
            type, config, dataset, validation, model, examples, noPoll, shared.Backend, shared.EnvFile, pollTimeout, pollInterval, dryRun, suffix, shared.Json,
        };
        command.SetAction(async (p, ct) =>
        {
            var request = new TrainRequest
            {
                Type = p.GetValue(type)!,
                ConfigPath = p.GetValue(config)!,
                DatasetPath = p.GetValue(dataset),
                ValidationPath = p.GetValue(validation),
                Model = p.GetValue(model),
                Examples = p.GetValue(examples),
                NoPoll = p.GetValue(noPoll),
                Backend = p.GetValue(shared.Backend),
                EnvFiles = p.GetValue(shared.EnvFile) ?? [],
                PollTimeoutSeconds = p.GetValue(pollTimeout),
                PollIntervalSeconds = p.GetValue(pollInterval),
                DryRun = p.GetValue(dryRun),
                Suffix = p.GetValue(suffix),
                Json = p.GetValue(shared.Json),
            };
            return (await TrainFlow.RunAsync(request, ctx, ct)).ExitCode;
        });
        return command;
    }
}
