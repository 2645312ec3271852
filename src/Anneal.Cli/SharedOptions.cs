// Options that several commands take, declared once and added to each of them.
using System.CommandLine;

namespace Anneal.Cli;

public sealed class SharedOptions
{
    public Option<string?> Backend { get; } = new("--backend") { HelpName = "URL", Description = "API base URL (default: BACKEND_BASE_URL, SYNTH_BACKEND_URL, http://127.0.0.1:8000)" };
    public Option<string[]> EnvFile { get; } = new("--env-file") { HelpName = "PATH", Description = "Extra .env file layered over ./.env; repeatable, later files win", AllowMultipleArgumentsPerToken = false };
    public Option<bool> Json { get; } = new("--json") { Description = "Print the result as JSON" };
    public Option<string?> DataDir { get; } = new("--data-dir") { HelpName = "DIR", Description = "Server data folder (database, files, jobs, models); default ~/.anneal" };
    public Option<string> Org { get; } = new("--org") { HelpName = "NAME", Description = "Organisation the key belongs to", DefaultValueFactory = _ => "default" };
}
