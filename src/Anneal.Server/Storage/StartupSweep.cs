// Start-up cleaning of what a crash or a failed request left behind, run while the data-folder
// lock is held and before the server listens (nothing else can be writing):
//   tmp/      every file: uploads in progress died with the previous process;
//   files/    blobs no row refers to: DELETE commits the row first and removes the bytes after,
//             so a crash in between leaves an orphan blob, never a row without its bytes.
using System.Text.RegularExpressions;

namespace Anneal.Server.Storage;

public static partial class StartupSweep
{
    public sealed record Result(int TempFiles, int OrphanBlobs);

    public static Result Run(Db db)
    {
        var temp = 0;
        foreach (var path in Directory.EnumerateFileSystemEntries(db.TmpDir).ToList())
        {
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
            if (!Sha256Name().IsMatch(name) || known.Contains(name)) continue;
            File.Delete(blob);
            orphans++;
        }
        return new Result(temp, orphans);
    }

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Name();
}
