// `anneal serve` in a child process (this test's anneal.dll), so a test can SIGKILL it: the state a
// crash leaves is then exactly what the kernel had, trainers included.
using System.Diagnostics;
using System.Net.Http.Headers;

namespace Anneal.Cli.Tests.EndToEnd;

public sealed class ServeProcess : IDisposable
{
    public required Process Process { get; init; }
    public required string BaseUrl { get; init; }
    public string? FirstKey { get; init; }

    /// <summary>
    /// Starts `anneal serve` on <paramref name="urls"/> (default: a free port) with <paramref name="more"/> options,
    /// on the test store (TestStore) unless they name a --database.
    /// </summary>
    public static async Task<ServeProcess> StartAsync(string dataDir, string urls = "http://127.0.0.1:0", params string[] more)
    {
        if (!more.Contains("--database")) more = [.. more, .. TestStore.ServeOptions(dataDir)];
        var self = CliContext.SelfCommandOfThisProcess();
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Skip(1).Concat(["serve", "--urls", urls, "--data-dir", dataDir, "--offline"]).Concat(more))
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string? url = null, key = null;
        var said = new List<string>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
            {
                said.Add(line);
                if (line.StartsWith("Anneal is listening on ")) url = line.Split(' ')[4];
                if (line.StartsWith("Created the first API key: ")) key = line["Created the first API key: ".Length..];
                if (line.StartsWith("Press Ctrl+C")) break;
            }
        }
        catch (OperationCanceledException) { url = null; }
        if (url is null)
        {
            process.Kill();
            await process.WaitForExitAsync();
            var why = timeout.IsCancellationRequested ? "did not start within 60 s" : $"exited with {process.ExitCode}";
            throw new InvalidOperationException($"anneal serve {why}; it said: {string.Join(" | ", said)}; stderr: {await stderr}");
        }
        _ = process.StandardOutput.ReadToEndAsync(); // keep the pipe drained
        return new ServeProcess { Process = process, BaseUrl = url, FirstKey = key };
    }

    public HttpClient Client(string key) => new()
    {
        BaseAddress = new Uri(BaseUrl + "/api/"),
        Timeout = TimeSpan.FromSeconds(30),
        DefaultRequestHeaders = { Authorization = new AuthenticationHeaderValue("Bearer", key) },
    };

    /// <summary>SIGKILL: no shutdown code runs, trainers are not told.</summary>
    public void Crash()
    {
        Process.Kill(entireProcessTree: false);
        Process.WaitForExit();
    }

    bool _disposed;

    /// <summary>Kills it if it still runs; a second call does nothing.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!Process.HasExited) Crash();
        Process.Dispose();
    }

    /// <summary>Pids of `anneal trainer run` processes whose spec lies under the data folder (Linux /proc).</summary>
    public static List<int> TrainersOf(string dataDir)
    {
        var pids = new List<int>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (cmdline.Contains("trainer\0run\0") && cmdline.Contains(dataDir)) pids.Add(pid);
        }
        return pids;
    }

    /// <summary>Waits until no trainer of the data folder runs; false after the timeout.</summary>
    public static async Task<bool> NoTrainersWithin(string dataDir, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (TrainersOf(dataDir).Count > 0)
        {
            if (DateTime.UtcNow > deadline) return false;
            await Task.Delay(100);
        }
        return true;
    }
}
