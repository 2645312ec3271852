// `anneal models`: the base models the server supports (GET /api/models) and, with a key, the
// organisation's fine-tuned models (GET /api/learning/models).
using System.CommandLine;
using System.Globalization;
using Anneal.Cli.Http;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Models;

public static class ModelsCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var fineTuned = new Option<bool>("--fine-tuned") { Description = "List your organisation's fine-tuned models instead of base models" };
        var command = new Command("models", "List the base models you can fine-tune (or your fine-tuned ones)") { fineTuned };
        command.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var json = p.GetValue(shared.Json);
            if (p.GetValue(fineTuned))
            {
                var list = await client.ListFineTunedModelsAsync(ct);
                if (json) ctx.WriteJson(list);
                else if (list.Data.Count == 0) ctx.Out.WriteLine("No fine-tuned models yet.");
                else
                {
                    Tables.Write(ctx, ["id", "base_model", "job_id", "status", "created"], list.Data.Select(m => (IReadOnlyList<string>)
                    [
                        m.Id, m.BaseModel, m.JobId, m.Status, m.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture),
                    ]));
                }
                return ExitCodes.Ok;
            }
            var models = await client.ListBaseModelsAsync(ct);
            if (json) ctx.WriteJson(models);
            else
            {
                Tables.Write(ctx, ["id", "family", "params (B)", "context", "vision", "modes", "trainable here"], models.Data.Select(m => (IReadOnlyList<string>)
                [
                    m.Id, m.Family, m.Parameters.ToString("0.###", CultureInfo.InvariantCulture),
                    m.ContextLength.ToString(CultureInfo.InvariantCulture), m.SupportsVision ? "yes" : "",
                    string.Join(", ", m.TrainingModes),
                    m.Trainable ? "yes" + (m.TrainableNote is { } n ? $" ({n})" : "") : "no" + (m.TrainableNote is { } n2 ? $": {n2}" : ""),
                ]));
            }
            return ExitCodes.Ok;
        }, keyRequired: false);
        command.Subcommands.Add(ExportCommand.Create(ctx, shared));
        return command;
    }
}
