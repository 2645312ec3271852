// `anneal setup`: writes SYNTH_API_KEY and BACKEND_BASE_URL into .env. For a local server it
// creates the key in the server's data folder; `--api-key KEY --backend URL` records a remote one.
// An existing different value is only replaced after a yes at a terminal, or with --force;
// otherwise nothing is written (DESIGN.md §8: upstream overwrote keys silently).
using System.CommandLine;
using Anneal.Cli.Env;
using Anneal.Cli.Http;
using Anneal.Server.Hosting;
using Spectre.Console;

namespace Anneal.Cli.Setup;

public static class SetupCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var apiKey = new Option<string?>("--api-key") { Description = "Use this existing key (for a remote server) instead of creating one" };
        var force = new Option<bool>("--force") { Description = "Overwrite values already in the .env file without asking" };
        var file = new Option<string>("--file") { Description = "The .env file to write", DefaultValueFactory = _ => ".env" };
        var command = new Command("setup", "Create an API key (or record a remote one) and write SYNTH_API_KEY and BACKEND_BASE_URL to .env")
        {
            apiKey, shared.Backend, shared.DataDir, shared.Org, force, file,
        };
        command.SetAction(async (p, ct) => await RunAsync(ctx, new SetupRequest(
            p.GetValue(apiKey), p.GetValue(shared.Backend), p.GetValue(shared.DataDir), p.GetValue(shared.Org)!,
            p.GetValue(force), p.GetValue(file)!), ct));
        return command;
    }

    public sealed record SetupRequest(string? ApiKey, string? Backend, string? DataDir, string Org, bool Force, string File);

    public static async Task<int> RunAsync(CliContext ctx, SetupRequest req, CancellationToken ct)
    {
        var path = ctx.FullPath(req.File);
        // A local key: the backend is where that data folder's server listens (recorded by it), else the default.
        var backend = req.Backend ?? (req.ApiKey is null
            ? ServerAddressFile.Read(req.DataDir is null ? LocalKeys.DefaultDataDir : ctx.FullPath(req.DataDir)) ?? CliEnvironment.DefaultBackend
            : null);
        if (backend is not null && CliEnvironment.CheckBackendUrl(backend) is { } urlError)
        {
            ctx.Error.WriteLine($"error: --backend: {urlError}");
            return ExitCodes.Usage;
        }
        if (req.ApiKey is { } given && (given.Trim().Length == 0 || given.Any(char.IsWhiteSpace)))
        {
            ctx.Error.WriteLine("error: --api-key: the key must be a single word without spaces");
            return ExitCodes.Usage;
        }

        var existingText = File.Exists(path) ? await File.ReadAllTextAsync(path, ct) : "";
        var (existing, parseErrors) = DotEnv.Parse(existingText, path);
        if (parseErrors.Count > 0)
        {
            foreach (var e in parseErrors) ctx.Error.WriteLine($"error: {e}");
            ctx.Error.WriteLine("  Fix or remove these lines first; setup does not rewrite a file it cannot read.");
            return ExitCodes.Usage;
        }

        // Which keys would change an existing value? Ask (terminal) or refuse (no terminal) first,
        // before creating anything, so a refusal leaves no orphan key behind.
        var keys = new List<string> { CliEnvironment.ApiKeyVariable };
        if (backend is not null) keys.Add(CliEnvironment.BackendVariable);
        foreach (var key in keys)
        {
            if (!existing.TryGetValue(key, out var old) || old.Length == 0) continue;
            var newValue = key == CliEnvironment.BackendVariable ? backend : req.ApiKey;
            if (newValue == old) continue;
            if (req.Force) continue;
            if (ctx.IsTerminal)
            {
                if (!await ctx.Console.ConfirmAsync($"{Markup.Escape(path)} already sets {key}. Replace it?", defaultValue: false, ct))
                {
                    ctx.Error.WriteLine($"Left {path} unchanged.");
                    return ExitCodes.Usage;
                }
                continue;
            }
            ctx.Error.WriteLine($"error: {path} already sets {key}; not overwriting it without a terminal to ask.");
            ctx.Error.WriteLine("  Pass --force to replace it, or --file to write another file.");
            return ExitCodes.Usage;
        }

        string key_;
        if (req.ApiKey is { } remoteKey) key_ = remoteKey;
        else
        {
            var dataDir = req.DataDir is null ? LocalKeys.DefaultDataDir : ctx.FullPath(req.DataDir);
            key_ = await LocalKeys.CreateAsync(dataDir, req.Org, ct);
            ctx.Error.WriteLine($"Created an API key for organisation '{req.Org}' in {dataDir}.");
        }

        var updates = new List<KeyValuePair<string, string>> { new(CliEnvironment.ApiKeyVariable, key_) };
        if (backend is not null) updates.Add(new(CliEnvironment.BackendVariable, backend));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await WriteOwnerOnlyAsync(path, DotEnv.Set(existingText, updates), ct);
        ctx.Out.WriteLine($"Wrote {string.Join(" and ", updates.Select(u => u.Key))} to {path} (key {Mask(key_)}).");
        if (req.ApiKey is null && backend is not null)
        {
            // Only suggest starting a server when none answers at the backend. A port nobody listens
            // on is refused at once; the timeout only bounds a busy server's answer.
            using var client = new AnnealClient(CliEnvironment.NormalizeApiBase(backend), null, TimeSpan.FromSeconds(10));
            const string next = "run `anneal train --type sft --config ... --dataset ...`.";
            if (await client.IsHealthyAsync(ct))
                ctx.Out.WriteLine($"A server is already running at {backend} (the key works if it serves the data folder above); {next}");
            else
                ctx.Out.WriteLine($"Start the server with `anneal serve{(req.DataDir is null ? "" : $" --data-dir {req.DataDir}")}`, then {next}");
        }
        return ExitCodes.Ok;
    }

    static string Mask(string key) => key.Length <= 10 ? new string('*', key.Length) : key[..6] + "..." + key[^4..];

    /// <summary>The file holds a plaintext key: readable by its owner only (0600), also when it existed with wider rights.</summary>
    static async Task WriteOwnerOnlyAsync(string path, string text, CancellationToken ct)
    {
        const UnixFileMode ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = ownerOnly;
            if (File.Exists(path)) File.SetUnixFileMode(path, ownerOnly); // before the key is in it
        }
        await using var writer = new StreamWriter(new FileStream(path, options));
        await writer.WriteAsync(text.AsMemory(), ct);
    }
}
