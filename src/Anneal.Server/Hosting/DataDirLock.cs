// One server per data folder: <data-dir>/server.lock is held open with FileShare.None (on Linux
// and macOS .NET takes an exclusive flock on it), so a second server on the same folder cannot
// start and treat the first one's running jobs as orphans. The lock is released by the kernel
// when the process dies, so a crashed server never leaves the folder blocked.
// <data-dir>/server.pid names the holder for the error message (the locked file cannot be read).
namespace Anneal.Server.Hosting;

public sealed class DataDirLock : IDisposable
{
    public const string LockFileName = "server.lock";
    public const string PidFileName = "server.pid";

    readonly FileStream _stream;
    readonly string _pidPath;

    DataDirLock(FileStream stream, string pidPath) => (_stream, _pidPath) = (stream, pidPath);

    /// <summary>Takes the lock or throws <see cref="ServerStartException"/> naming the holder's pid.</summary>
    public static DataDirLock Acquire(string dataDir)
    {
        var dir = Path.GetFullPath(dataDir);
        Directory.CreateDirectory(dir);
        var lockPath = Path.Combine(dir, LockFileName);
        var pidPath = Path.Combine(dir, PidFileName);
        FileStream stream;
        try { stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException)
        {
            var pid = ReadPid(pidPath);
            var who = pid is null ? "another Anneal server" : $"another Anneal server (pid {pid})";
            throw new ServerStartException(
                $"data folder {dir} is in use by {who}; stop it or use --data-dir to pick another folder");
        }
        var pidText = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n";
        stream.SetLength(0);
        var bytes = System.Text.Encoding.ASCII.GetBytes(pidText);
        stream.Write(bytes);
        stream.Flush();
        File.WriteAllText(pidPath, pidText);
        return new DataDirLock(stream, pidPath);
    }

    static string? ReadPid(string pidPath)
    {
        try { return File.ReadAllText(pidPath).Trim() is { Length: > 0 } s ? s : null; }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    public void Dispose()
    {
        try { File.Delete(_pidPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _stream.Dispose();
    }
}
