// Why mpirun ended a multi-rank job when no rank reported sft.failed (a rank killed, or one that
// exited without a word): mpirun's own words at the end of trainer.log name the rank. Open MPI 4.1:
//   "mpirun noticed that process rank 1 with PID 0 on node h exited on signal 9 (Killed)."
//   "mpirun detected that one or more processes exited with non-zero status, …
//      Process name: [[1509,1],1]
//      Exit code:    3"
// mpirun's own exit status is then the dead rank's (137 for SIGKILL), which alone would read as if
// the whole job had been killed.
using System.Text.RegularExpressions;

namespace Anneal.Server.Runner;

public static partial class MpirunExit
{
    /// <summary>"rank 1 was killed by signal 9 (Killed)" or "rank 1 exited with code 3", from the log's tail; null if mpirun said neither.</summary>
    public static string? DeadRank(IReadOnlyList<string> tail)
    {
        foreach (var line in tail)
            if (Signalled().Match(line) is { Success: true } s)
            {
                var signal = int.Parse(s.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
                return $"rank {s.Groups[1].Value} was killed by signal {signal}{(s.Groups[3].Success ? $" ({s.Groups[3].Value})" : "")}" +
                       (signal == 9 ? ", often the out-of-memory killer" : "");
            }
        for (var i = 0; i < tail.Count; i++)
            if (ProcessName().Match(tail[i]) is { Success: true } p && i + 1 < tail.Count && ExitCode().Match(tail[i + 1]) is { Success: true } c)
                return $"rank {p.Groups[1].Value} exited with code {c.Groups[1].Value} without reporting an error";
        return null;
    }

    [GeneratedRegex(@"mpirun noticed that process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)(?: \(([^)]+)\))?")]
    private static partial Regex Signalled();

    [GeneratedRegex(@"^\s*Process name:\s*\[\[\d+,\d+\],(\d+)\]")]
    private static partial Regex ProcessName();

    [GeneratedRegex(@"^\s*Exit code:\s*(-?\d+)")]
    private static partial Regex ExitCode();
}
