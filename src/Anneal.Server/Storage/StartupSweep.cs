// Start-up cleaning of what a crash or a failed request left behind, run while the data-folder
// lock is held and before the server listens (nothing else can be writing):
//   tmp/      every file: uploads in progress died with the previous process;
//   files/    blobs no row refers to: DELETE commits the row first and removes the bytes after,
//             so a crash in between leaves an orphan blob, never a row without its bytes.
// On a shared store (PostgreSQL) other servers use the same folder and may be mid-upload: only
// what is older than SharedGrace is swept (an upload's temp file, or a blob renamed into files/
// whose row is not committed yet, is young). With an object store the folder is this server's own
// (locked) cache: everything in it is swept at once, and only this cache's copies are removed.
// Objects in the store are never swept here: another server may be between putting an object and
// committing its row, and an orphan object costs only storage.
// TODO: sweep orphan objects older than SharedGrace (files/ keys no row names) in the background.
using System.Text.RegularExpressions;

namespace Anneal.Server.Storage;

public static partial class StartupSweep
{
    public sealed record Result(int TempFiles, int OrphanBlobs);

    public static readonly TimeSpan SharedGrace = TimeSpan.FromHours(6);

    /// <param name="sharedFolder">Other servers use this data folder too (one PostgreSQL database, no object store).</param>
    public static Result Run(Db db, bool sharedFolder)
    {
        var cutoff = sharedFolder ? DateTime.UtcNow - SharedGrace : DateTime.MaxValue;
        bool Old(string path) => File.GetLastWriteTimeUtc(path) < cutoff;
        var temp = 0;
        foreach (var path in Directory.EnumerateFileSystemEntries(db.TmpDir).ToList())
        {
            if (!Old(path)) continue;
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else File.Delete(path);
            temp++;
        }
        using var conn = db.Connect();
        var known = Db.Query(conn, null, "SELECT DISTINCT sha256 FROM files", r => r.GetString(0)).ToHashSet(StringComparer.Ordinal);
        var orphans = 0;
        foreach (var blob in Directory.EnumerateFiles(db.FilesDir).ToList())
        {
            var name = Path.GetFileName(blob);
            if (!Sha256Name().IsMatch(name) || known.Contains(name) || !Old(blob)) continue;
            File.Delete(blob);
            orphans++;
        }
        return new Result(temp, orphans);
    }

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Name();
}
