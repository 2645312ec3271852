// `anneal keys create [--org NAME] [--data-dir DIR]`: a new key for a local server, printed alone
// on stdout so scripts can capture it.
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
        return new Command("keys", "Manage API keys of a local server") { create };
    }
}
