// Shared plumbing of the commands that talk to the server (jobs, files, models): load the env
// layers, resolve backend and key, run the call, and turn API failures into exit codes.
using System.CommandLine;
using System.Text.Json;
using Anneal.Cli.Env;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Http;

public static class ApiCommand
{
    /// <summary>Adds --backend, --env-file (and --json when `json`) and runs `body` with a client.</summary>
    public static void SetApiAction(this Command command, CliContext ctx, SharedOptions shared, bool json,
        Func<ParseResult, AnnealClient, CancellationToken, Task<int>> body, bool keyRequired = true)
    {
        command.Add(shared.Backend);
        command.Add(shared.EnvFile);
        if (json) command.Add(shared.Json);
        command.SetAction(async (p, ct) =>
        {
            var (env, errors) = CliEnvironment.Load(ctx, p.GetValue(shared.EnvFile) ?? []);
            if (env is null)
            {
                foreach (var e in errors) ctx.Error.WriteLine($"error: {e}");
                return ExitCodes.Usage;
            }
            var backend = env.BackendBaseUrl(p.GetValue(shared.Backend));
            if (CliEnvironment.CheckBackendUrl(backend) is { } urlError)
            {
                ctx.Error.WriteLine($"error: {urlError}");
                return ExitCodes.Usage;
            }
            if (keyRequired && env.ApiKey is null)
            {
                ctx.Error.WriteLine($"error: {CliEnvironment.ApiKeyVariable} is not set (looked in the environment and .env in {ctx.WorkingDirectory}).");
                ctx.Error.WriteLine("  Run `anneal setup` to create a key and write it to .env.");
                return ExitCodes.Usage;
            }
            using var client = new AnnealClient(backend, env.ApiKey);
            try
            {
                return await body(p, client, ct);
            }
            catch (Exception e) when (ApiErrors.IsApiError(e))
            {
                return ApiErrors.Report(ctx, e, keySource: env.SourceOf(CliEnvironment.ApiKeyVariable));
            }
        });
    }

    public static void WriteJson<T>(this CliContext ctx, T value) =>
        ctx.Out.WriteLine(JsonSerializer.Serialize(value, AnnealJson.Indented));
}
