// `anneal worker` in a child process (this test's anneal.dll), so a test can pause it (SIGSTOP),
// resume it (SIGCONT) or kill it (SIGKILL) like an operator or the kernel would. Its output is
// collected as it comes.
using System.Diagnostics;
using System.Text;

namespace Anneal.Cli.Tests.Worker;

public sealed class WorkerProcess : IDisposable
{
    readonly StringBuilder _out = new();
    public required Process Process { get; init; }
    public required string WorkDir { get; init; }

    public static WorkerProcess Start(string server, string token, string workDir, string name, params string[] more)
    {
        var self = CliContext.SelfCommandOfThisProcess();
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(["worker", "--server", server, "--token", token, "--work-dir", workDir, "--offline", "--name", name]).Concat(more))
            psi.ArgumentList.Add(a);
        var worker = new WorkerProcess { Process = Process.Start(psi)!, WorkDir = workDir };
        worker.Process.OutputDataReceived += (_, e) => { if (e.Data is { } l) lock (worker._out) worker._out.Append(l).Append('\n'); };
        worker.Process.ErrorDataReceived += (_, e) => { if (e.Data is { } l) lock (worker._out) worker._out.Append(l).Append('\n'); };
        worker.Process.BeginOutputReadLine();
        worker.Process.BeginErrorReadLine();
        return worker;
    }

    /// <summary>Everything it printed so far (stdout and stderr, interleaved).</summary>
    public string Output
    {
        get { lock (_out) return _out.ToString(); }
    }

    public void Signal(string signal) => Signal(Process.Id, signal);

    /// <summary>kill -<paramref name="signal"/> <paramref name="pid"/> (STOP, CONT, ...).</summary>
    public static void Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false })!;
        kill.WaitForExit();
        if (kill.ExitCode != 0) throw new InvalidOperationException($"kill -{signal} {pid} failed");
    }

    /// <summary>SIGKILL: no shutdown code runs; its trainer notices on its own (ServerWatch) and stops.</summary>
    public void Crash()
    {
        if (Process.HasExited) return;
        Process.Kill(entireProcessTree: false);
        Process.WaitForExit();
    }

    /// <summary>Waits until its output contains <paramref name="text"/>; false after the timeout.</summary>
    public async Task<bool> SaysWithin(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            if (DateTime.UtcNow > deadline) return false;
            await Task.Delay(100);
        }
        return true;
    }

    public void Dispose()
    {
        try { if (!Process.HasExited) Signal("CONT"); } catch (InvalidOperationException) { }
        Crash();
        Process.Dispose();
        // A trainer left behind (its worker was killed) is not left running after the test.
        foreach (var pid in EndToEnd.ServeProcess.TrainersOf(WorkDir))
            try
            {
                Signal(pid, "CONT");
                System.Diagnostics.Process.GetProcessById(pid).Kill();
            }
            catch (ArgumentException) { }
            catch (InvalidOperationException) { }
    }
}
