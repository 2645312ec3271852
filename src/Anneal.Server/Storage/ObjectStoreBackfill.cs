// The first start of a data folder with an object store (`--object-store`, or a different one than
// before): what the folder already holds and the database names (uploaded files and their images,
// checkpoints, final models) is put into the bucket, so servers that lack the folder can read it
// too and nothing stored before the switch is lost to them. Objects the bucket already has are
// left alone. <data-dir>/object-store.url records the store once everything is in it; a start
// interrupted half-way does the rest next time (each put is idempotent: keys are content- or
// job-addressed).
using Anneal.Core.Vision;
using Anneal.Server.Files;
using Anneal.Server.Runner;

namespace Anneal.Server.Storage;

public static class ObjectStoreBackfill
{
    public sealed record Result(int Files, int Folders, IReadOnlyList<string> Skipped);

    public static string RecordPath(Db db) => Path.Combine(db.DataDir, "object-store.url");

    /// <summary>Puts the folder's files and job outputs into the store unless this folder already did for this store.</summary>
    public static async Task<Result> RunAsync(Db db, CancellationToken ct)
    {
        var record = RecordPath(db);
        if (db.Objects.IsDataFolder || (File.Exists(record) && File.ReadAllText(record).Trim() == db.Objects.Name)) return new Result(0, 0, []);
        List<string> shas, folders;
        using (var conn = db.Connect())
        {
            shas = Db.Query(conn, null, "SELECT DISTINCT sha256 FROM files", r => r.GetString(0));
            folders = Db.Query(conn, null, "SELECT path FROM checkpoints UNION SELECT path FROM fine_tuned_models", r => r.GetString(0));
        }
        int files = 0, published = 0;
        var skipped = new List<string>();
        foreach (var sha in shas)
        {
            var blob = FileRows.BlobPath(db, sha);
            if (!File.Exists(blob)) continue;   // another server's upload: in the store already
            if (await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, blob), ct) is null)
            {
                // Only bytes that still match their name go up: a damaged local copy would poison every server.
                if (await ObjectFiles.Sha256Of(blob, ct) != sha) { skipped.Add($"{ObjectFiles.KeyOf(db, blob)} (its bytes no longer match their sha256)"); continue; }
                await db.Objects.PutAsync(ObjectFiles.KeyOf(db, blob), blob, sha, ct);
                files++;
            }
            var images = StoredImages.FolderFor(blob);
            if (Directory.Exists(images) && await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, images) + ObjectFiles.ManifestSuffix, ct) is null)
            {
                await ObjectFiles.PublishFolderAsync(db, images, ct);
                published++;
            }
        }
        // Rows of earlier versions name folders by absolute path: they get the key form every server resolves.
        using (var conn = db.Connect())
            foreach (var stored in folders.Where(Path.IsPathRooted))
                if (JobArtifacts.Stored(db, stored) is var key && key != stored)
                    foreach (var (table, column) in new[] { ("checkpoints", "path"), ("fine_tuned_models", "path"), ("jobs", "resume_from") })
                        Db.Exec(conn, null, $"UPDATE {table} SET {column} = @key WHERE {column} = @old", ("@key", key), ("@old", stored));
        foreach (var stored in folders)
        {
            var local = JobArtifacts.Local(db, stored);
            if (JobArtifacts.UnitOf(db, local) is not { } unit || !Directory.Exists(unit)) continue;
            if (await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, unit) + ObjectFiles.ManifestSuffix, ct) is not null) continue;
            await ObjectFiles.PublishFolderAsync(db, unit, ct);
            published++;
        }
        var tmp = record + ".tmp";
        await File.WriteAllTextAsync(tmp, db.Objects.Name + "\n", ct);
        File.Move(tmp, record, overwrite: true);
        return new Result(files, published, skipped);
    }
}
