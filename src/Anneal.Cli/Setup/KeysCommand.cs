// `anneal keys create [--org NAME] [--data-dir DIR]`: a new key for a local server, printed alone
// on stdout so scripts can capture it. `anneal keys list [--org NAME | --all]` shows ids, never
// keys; `anneal keys revoke ID` removes one at once (a running server refuses it from the next request).
using System.CommandLine;

namespace Anneal.Cli.Setup;

public static class KeysCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var create = new Command("create", "Create an API key in a local server's data folder and print it") { shared.Org, shared.DataDir };
        create.SetAction(async (p, ct) =>
        {
            var org = p.GetValue(shared.Org)!;
            if (org.Trim().Length == 0)
            {
                ctx.Error.WriteLine("error: --org: the organisation name must not be empty");
                return ExitCodes.Usage;
            }
            var dataDir = p.GetValue(shared.DataDir) is { } d ? ctx.FullPath(d) : LocalKeys.DefaultDataDir;
            ctx.Out.WriteLine(await LocalKeys.CreateAsync(dataDir, org, ct));
            return ExitCodes.Ok;
        });
        var all = new Option<bool>("--all") { Description = "List the keys of every organisation" };
        var list = new Command("list", "List the API keys of a local server's data folder (ids, never the keys)") { shared.Org, all, shared.DataDir };
        list.SetAction(p =>
        {
            var dataDir = p.GetValue(shared.DataDir) is { } d ? ctx.FullPath(d) : LocalKeys.DefaultDataDir;
            if (!LocalKeys.Exists(dataDir))
            {
                ctx.Error.WriteLine($"error: --data-dir {dataDir}: no server data folder there (neither anneal.db nor database.url)");
                return ExitCodes.Usage;
            }
            var keys = Anneal.Server.Auth.ApiKeys.List(dataDir, p.GetValue(all) ? null : p.GetValue(shared.Org));
            ctx.Out.WriteLine($"{"ID",-30} {"ORGANISATION",-20} {"ADMIN",-5} CREATED");
            foreach (var k in keys)
                ctx.Out.WriteLine($"{k.Id,-30} {k.Org,-20} {(k.Admin ? "yes" : "no"),-5} {k.CreatedAt:yyyy-MM-dd HH:mm:ss}Z");
            return ExitCodes.Ok;
        });

        var id = new Argument<string>("id") { Description = "The key's id (key_…), from `anneal keys list`" };
        var revoke = new Command("revoke", "Revoke an API key at once (requests with it get 401)") { id, shared.DataDir };
        revoke.SetAction(p =>
        {
            var dataDir = p.GetValue(shared.DataDir) is { } d ? ctx.FullPath(d) : LocalKeys.DefaultDataDir;
            var keyId = p.GetValue(id)!;
            if (!LocalKeys.Exists(dataDir))
            {
                ctx.Error.WriteLine($"error: --data-dir {dataDir}: no server data folder there (neither anneal.db nor database.url)");
                return ExitCodes.Usage;
            }
            if (!Anneal.Server.Auth.ApiKeys.Revoke(dataDir, keyId))
            {
                ctx.Error.WriteLine($"error: no API key with id '{keyId}' in {dataDir}; see `anneal keys list --all`");
                return ExitCodes.Usage;
            }
            ctx.Out.WriteLine($"Revoked {keyId}.");
            return ExitCodes.Ok;
        });
        return new Command("keys", "Manage API keys of a local server") { create, list, revoke };
    }
}
