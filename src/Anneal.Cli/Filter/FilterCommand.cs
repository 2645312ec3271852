// `anneal filter`: traces from `anneal eval` → an SFT dataset for `anneal train` (rules in
// Core/Traces/TraceFilter.cs). Lines that are not usable traces are reported with their line numbers
// and skipped (exit 0 when something is kept); the output is written to a temporary file, validated
// as a dataset and renamed into place, so it is never half-written.
using System.CommandLine;
using Anneal.Core.Traces;

namespace Anneal.Cli.Filter;

public static class FilterCommand
{
    public static Command Create(CliContext ctx)
    {
        var traces = new Option<string>("--traces") { Description = "Traces file written by `anneal eval` (JSONL)", Required = true };
        var output = new Option<string>("--output") { Description = "SFT dataset to write (JSONL), e.g. ft_data/out.jsonl", Required = true };
        var minScore = new Option<double?>("--min-score") { Description = "Keep traces scoring at least this (0 to 1); traces without a score are dropped" };
        var maxExamples = new Option<int?>("--max-examples") { Description = "Keep at most N traces (the first ones in file order)" };
        var model = new Option<string?>("--model") { Description = "metadata.source_model of every record (default: each trace's model)" };
        var correct = new Option<bool>("--correct-with-expected") { Description = "Keep traces below --min-score that have an expected answer, with that answer as the reply (supervised correction)" };
        var command = new Command("filter",
            "Turn scored traces into an SFT dataset: {messages, metadata{trace_id, score, source_model}} per kept trace.\n" +
            "Bad trace lines are reported with their line numbers and skipped; exit 2 when nothing is kept.")
        { traces, output, minScore, maxExamples, model, correct };
        command.SetAction(p =>
        {
            var path = ctx.FullPath(p.GetValue(traces)!);
            if (!File.Exists(path))
            {
                ctx.Error.WriteLine($"error: --traces {path}: file not found");
                return ExitCodes.Usage;
            }
            if (p.GetValue(minScore) is { } min && (min is < 0 or > 1 || double.IsNaN(min)))
            {
                ctx.Error.WriteLine($"error: --min-score {min}: expected a number from 0 to 1");
                return ExitCodes.Usage;
            }
            if (p.GetValue(maxExamples) is { } max && max <= 0)
            {
                ctx.Error.WriteLine($"error: --max-examples {max}: expected a positive number");
                return ExitCodes.Usage;
            }
            var options = new TraceFilterOptions(p.GetValue(minScore), p.GetValue(maxExamples), p.GetValue(model), p.GetValue(correct));
            TraceFilterResult result;
            using (var stream = File.OpenRead(path))
                result = TraceFilter.Filter(stream, options);

            if (result.TotalBadLines > 0)
            {
                ctx.Error.WriteLine($"warning: {path}: skipped {result.TotalBadLines} problem{(result.TotalBadLines == 1 ? "" : "s")} in bad trace lines:");
                foreach (var e in result.BadLines) ctx.Error.WriteLine($"  {e}");
                if (result.TotalBadLines > result.BadLines.Count) ctx.Error.WriteLine($"  ... first {result.BadLines.Count} shown");
            }
            var dropped = string.Join(", ", result.Dropped.Select(d => $"{d.Value} {Describe(d.Key, options)}"));
            if (result.Kept == 0)
            {
                ctx.Error.WriteLine($"error: no trace kept from {result.TracesRead} read{(dropped.Length > 0 ? $" (dropped: {dropped})" : "")}; {ctx.FullPath(p.GetValue(output)!)} was not written");
                return ExitCodes.Usage;
            }
            var outputPath = ctx.FullPath(p.GetValue(output)!);
            TraceFilter.WriteDataset(outputPath, result.Records);
            ctx.Out.WriteLine($"Kept {result.Kept} of {result.TracesRead} traces → {outputPath}");
            if (dropped.Length > 0) ctx.Out.WriteLine($"Dropped: {dropped}");
            return ExitCodes.Ok;
        });
        return command;
    }

    static string Describe(string reason, TraceFilterOptions options) => reason switch
    {
        TraceFilter.BelowMinScore => $"{reason} {options.MinScore}",
        TraceFilter.OverMaxExamples => $"{reason} {options.MaxExamples}",
        _ => reason,
    };
}
