// Exit codes of every command (DESIGN.md §4).
namespace Anneal.Cli;

public static class ExitCodes
{
    /// <summary>Succeeded, or submitted with --no-poll.</summary>
    public const int Ok = 0;
    /// <summary>The job failed or was cancelled, or the server answered with an error / could not be reached.</summary>
    public const int Failed = 1;
    /// <summary>Usage, config or dataset error: nothing was uploaded.</summary>
    public const int Usage = 2;
    /// <summary>--poll-timeout elapsed before the job reached a terminal state.</summary>
    public const int PollTimeout = 3;
    /// <summary>
    /// Interrupted (Ctrl+C or SIGTERM): every command prints "Interrupted." and exits with this;
    /// a job being followed keeps running on the server. `serve` alone exits 0, as stopping is how it ends.
    /// </summary>
    public const int Interrupted = 130;
}
