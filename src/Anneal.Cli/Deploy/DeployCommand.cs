// `anneal deploy MODEL`: load a model (a base id or a fine_tuned_model) into the server's
// inference process, wait until it answers, and print the OpenAI endpoint to use it with;
// `anneal deploy list` and `anneal deploy stop ID`.
using System.CommandLine;
using System.Globalization;
using Anneal.Cli.Http;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Deploy;

public static class DeployCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var model = new Argument<string>("model") { Description = "A base model id or a fine_tuned_model (ft:…, fft:…)", Arity = ArgumentArity.ZeroOrOne };
        var device = new Option<string?>("--device") { Description = "cpu or gpu (default: the server's inference device)" };
        device.AcceptOnlyFromAmong("cpu", "gpu");
        var noWait = new Option<bool>("--no-wait") { Description = "Return at once, while the model is still loading" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the model to load", DefaultValueFactory = _ => 600 };
        var command = new Command("deploy", "Serve a model on the server's OpenAI-compatible /v1 endpoint") { model, device, noWait, timeout };
        command.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            if (p.GetValue(model) is not { Length: > 0 } id)
            {
                ctx.Error.WriteLine("error: give the model to deploy, e.g. `anneal deploy ft:Qwen/Qwen3-4B:job_…` (or `anneal deploy list`)");
                return ExitCodes.Usage;
            }
            var d = await client.CreateDeploymentAsync(new CreateDeploymentRequest(id, p.GetValue(device)), ct);
            var deadline = DateTime.UtcNow.AddSeconds(p.GetValue(timeout));
            while (!p.GetValue(noWait) && d.Status == DeploymentStatus.Loading && DateTime.UtcNow < deadline)
            {
                await Task.Delay(300, ct);
                d = await client.GetDeploymentAsync(d.Id, ct);
            }
            if (p.GetValue(shared.Json)) ctx.WriteJson(d);
            else Describe(ctx, d);
            return d.Status switch
            {
                DeploymentStatus.Ready => ExitCodes.Ok,
                DeploymentStatus.Loading when p.GetValue(noWait) => ExitCodes.Ok,
                DeploymentStatus.Loading => ExitCodes.PollTimeout,
                _ => ExitCodes.Failed,
            };
        });

        var list = new Command("list", "List your deployments");
        list.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var all = await client.ListDeploymentsAsync(ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(all);
            else if (all.Data.Count == 0) ctx.Out.WriteLine("No deployments yet: `anneal deploy MODEL` creates one.");
            else
                Tables.Write(ctx, ["id", "model", "status", "device", "endpoint", "created"], all.Data.Select(x => (IReadOnlyList<string>)
                [
                    x.Id, x.Model, x.Status, x.Device, x.Endpoint, x.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture),
                ]));
            return ExitCodes.Ok;
        });
        var stopId = new Argument<string>("id") { Description = "The deployment id (dep_…)" };
        var stop = new Command("stop", "Stop a deployment") { stopId };
        stop.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var d = await client.StopDeploymentAsync(p.GetValue(stopId)!, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(d);
            else ctx.Out.WriteLine($"deployment {d.Id} ({d.Model}): {d.Status}");
            return ExitCodes.Ok;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(stop);
        return command;
    }

    static void Describe(CliContext ctx, DeploymentObject d)
    {
        ctx.Out.WriteLine($"deployment: {d.Id}");
        ctx.Out.WriteLine($"model: {d.Model}");
        ctx.Out.WriteLine($"status: {d.Status} ({d.Device})");
        if (d.Error is { } e) ctx.Out.WriteLine($"error: {e.Message}");
        ctx.Out.WriteLine($"endpoint: {d.Endpoint}");
        if (d.Status is DeploymentStatus.Ready or DeploymentStatus.Loading)
        {
            ctx.Out.WriteLine("Chat with it from any OpenAI client (base_url = endpoint, api_key = SYNTH_API_KEY), e.g.:");
            ctx.Out.WriteLine($"  curl {d.Endpoint}/chat/completions -H \"Authorization: Bearer $SYNTH_API_KEY\" -H \"Content-Type: application/json\" \\");
            ctx.Out.WriteLine($"    -d '{{\"model\": \"{d.Model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'");
        }
    }
}
