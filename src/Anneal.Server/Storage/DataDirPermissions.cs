// The data folder holds every organisation's datasets, models and the API-key hashes: other local
// users must not read it. Folders are created 0700 and files 0600 (an existing data folder is
// tightened on start); SQLite gives anneal.db-wal and -shm the mode of anneal.db itself.
namespace Anneal.Server.Storage;

public static class DataDirPermissions
{
    public const UnixFileMode OwnerOnlyFolder = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Creates the folder 0700, or restricts an existing one to its owner.</summary>
    public static void CreateFolder(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
            return;
        }
        if (!Directory.Exists(path)) Directory.CreateDirectory(path, OwnerOnlyFolder);
        if (File.GetUnixFileMode(path) != OwnerOnlyFolder) File.SetUnixFileMode(path, OwnerOnlyFolder);
    }

    /// <summary>Creates an empty file 0600 when missing (before SQLite creates it 0644), or restricts an existing one.</summary>
    public static void CreateFile(string path)
    {
        if (OperatingSystem.IsWindows()) return;
        if (!File.Exists(path)) new FileStream(path, NewFile(FileMode.CreateNew, FileAccess.Write, FileOptions.None)).Dispose();
        else if (File.GetUnixFileMode(path) != OwnerOnlyFile) File.SetUnixFileMode(path, OwnerOnlyFile);
    }

    /// <summary>Options for a new file readable by the owner only (unbuffered, not shared).</summary>
    public static FileStreamOptions NewFile(FileMode mode, FileAccess access, FileOptions options)
    {
        var o = new FileStreamOptions { Mode = mode, Access = access, Share = FileShare.None, BufferSize = 1, Options = options };
        if (!OperatingSystem.IsWindows()) o.UnixCreateMode = OwnerOnlyFile;
        return o;
    }
}
