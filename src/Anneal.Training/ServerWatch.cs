// A trainer started by `anneal serve` must not outlive it: a server killed with SIGKILL cannot
// stop its trainers, and an orphan would keep training, save checkpoints the database never hears
// of and prune the one it knows. The server passes its pid in ANNEAL_SERVER_PID; the trainer then
// watches three things and asks for a checkpoint-and-stop at the next optimizer step when any fires:
//   - the Linux parent-death signal (prctl PR_SET_PDEATHSIG → SIGHUP), immediate;
//   - its stdin, a pipe from the server: EOF means the server's end is closed;
//   - getppid(), polled: the process is re-parented when the server is gone.
// PR_SET_PDEATHSIG fires when the *thread* that started the process exits, and the server starts
// trainers from pool threads that may retire; so a SIGHUP counts only once getppid() has changed.
using System.Globalization;
using System.Runtime.InteropServices;
using Anneal.Core.Training;

namespace Anneal.Training;

public sealed partial class ServerWatch : IDisposable
{
    static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(500);
    const int PrSetPdeathsig = 1, SigHup = 1, Esrch = 3;

    readonly int _serverPid, _parentPid;
    readonly Action<string> _onGone;
    readonly CancellationTokenSource _stop = new();
    readonly PosixSignalRegistration? _sighup;
    int _fired;

    ServerWatch(int serverPid, Action<string> onGone, bool watchStdin)
    {
        _serverPid = serverPid;
        // The direct parent is the server, or a wrapper it started (either one going away counts).
        _parentPid = OperatingSystem.IsWindows() ? 0 : GetPpid();
        _onGone = onGone;
        if (OperatingSystem.IsLinux())
        {
            _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c =>
            {
                c.Cancel = true; // never the default (terminate): a retired server thread also sends it
                CheckParent();
            });
            _ = Prctl(PrSetPdeathsig, SigHup, 0, 0, 0);
        }
        // The server may have died before the signal was armed.
        if (!OperatingSystem.IsWindows() && Kill(serverPid, 0) != 0 && Marshal.GetLastPInvokeError() == Esrch)
            Fire($"the server (pid {serverPid}) is gone");
        CheckParent();
        new Thread(Poll) { IsBackground = true, Name = "server-watch" }.Start();
        if (watchStdin) new Thread(WatchStdin) { IsBackground = true, Name = "server-watch-stdin" }.Start();
    }

    /// <summary>
    /// Starts watching when <paramref name="environment"/> names the server's pid (a trainer run by
    /// hand has none, and is left alone); <paramref name="onGone"/> gets the reason, once.
    /// </summary>
    public static ServerWatch? Start(IReadOnlyDictionary<string, string> environment, Action<string> onGone, bool watchStdin = true)
    {
        if (!environment.TryGetValue(TrainerProtocol.ServerPidVariable, out var text)
            || !int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
            return null;
        return new ServerWatch(pid, onGone, watchStdin);
    }

    void CheckParent()
    {
        if (!OperatingSystem.IsWindows() && GetPpid() != _parentPid)
            Fire($"the server (pid {_serverPid}) is gone: this process was re-parented");
    }

    void Poll()
    {
        while (!_stop.Token.WaitHandle.WaitOne(PollInterval)) CheckParent();
    }

    void WatchStdin()
    {
        try
        {
            using var stdin = Console.OpenStandardInput();
            var buffer = new byte[256];
            while (stdin.Read(buffer, 0, buffer.Length) > 0) { }
        }
        catch (IOException) { }
        if (!_stop.IsCancellationRequested) Fire("the server closed the trainer's stdin");
    }

    void Fire(string reason)
    {
        if (Interlocked.Exchange(ref _fired, 1) == 0) _onGone(reason);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _sighup?.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int Prctl(int option, nint arg2, nint arg3, nint arg4, nint arg5);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "getppid")]
    private static partial int GetPpid();
}
