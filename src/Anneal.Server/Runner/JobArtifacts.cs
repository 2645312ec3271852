// A job's outputs (checkpoints/step-N, final) in the object store, and how the database names
// them. Rows (checkpoints.path, fine_tuned_models.path, jobs.resume_from) hold the folder's path
// relative to the data folder, e.g. `jobs/<job>/output/final/merged`: the object store's key and,
// on every server, the place of its cached copy (rows written before hold absolute paths, which
// resolve to themselves). A folder is published whole, as one unit, when the trainer (local or a
// worker's, whose upload reaches this server before the line naming it) reports it; a server that
// needs a folder it lacks (a fine-tuned model to export, deploy or continue from, a checkpoint to
// resume) fetches its unit from the store first (Storage/ObjectFiles.cs).
using Anneal.Server.Storage;

namespace Anneal.Server.Runner;

public static class JobArtifacts
{
    /// <summary>The form rows keep: relative to the data folder when the folder is inside it.</summary>
    public static string Stored(Db db, string path)
    {
        var full = Path.GetFullPath(path);
        var relative = Path.GetRelativePath(db.DataDir, full);
        return relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative) ? full : relative.Replace(Path.DirectorySeparatorChar, '/');
    }

    /// <summary>The path on this server of a stored (relative, or legacy absolute) path.</summary>
    public static string Local(Db db, string stored) => Path.GetFullPath(Path.Combine(db.DataDir, stored.Replace('/', Path.DirectorySeparatorChar)));

    /// <summary>
    /// The published unit a folder belongs to: `…/output/final` or `…/output/checkpoints/step-N`
    /// (a LoRA job's `final/merged` travels with its `final`); null for anything else.
    /// </summary>
    public static string? UnitOf(Db db, string local)
    {
        var parts = Path.GetRelativePath(db.DataDir, local).Split(Path.DirectorySeparatorChar);
        // jobs/<id>/output/final[/…] or jobs/<id>/output/checkpoints/step-N[/…]
        if (parts.Length < 4 || parts[0] != "jobs" || parts[2] != "output") return null;
        if (parts[3] == "final") return Path.Combine(db.DataDir, "jobs", parts[1], "output", "final");
        if (parts[3] == "checkpoints" && parts.Length >= 5 && parts[4].StartsWith("step-", StringComparison.Ordinal))
            return Path.Combine(db.DataDir, "jobs", parts[1], "output", "checkpoints", parts[4]);
        return null;
    }

    /// <summary>Puts a trainer's folder (final or a checkpoint) into the object store; nothing to do for the data folder.</summary>
    public static Task PublishAsync(Db db, string local, CancellationToken ct) =>
        db.Objects.IsDataFolder || !Directory.Exists(local) ? Task.CompletedTask : ObjectFiles.PublishFolderAsync(db, UnitOf(db, local) ?? local, ct);

    /// <summary>The local path of a stored path, its unit fetched from the object store when this server lacks it.</summary>
    public static async Task<string> EnsureLocalAsync(Db db, string stored, CancellationToken ct)
    {
        var local = Local(db, stored);
        if (!Directory.Exists(local) && !db.Objects.IsDataFolder && UnitOf(db, local) is { } unit)
            await ObjectFiles.EnsureFolderAsync(db, unit, ct);
        return local;
    }

    /// <summary>Whether this server has the folder or the object store holds it complete.</summary>
    public static async Task<bool> ExistsAsync(Db db, string stored, CancellationToken ct)
    {
        var local = Local(db, stored);
        if (Directory.Exists(local)) return true;
        if (db.Objects.IsDataFolder || UnitOf(db, local) is not { } unit) return false;
        return await db.Objects.HeadAsync(ObjectFiles.KeyOf(db, unit) + ObjectFiles.ManifestSuffix, ct) is not null;
    }

    /// <summary>
    /// For recovery, which holds a transaction: whether the object store holds the folder complete
    /// (false for the data folder, which recovery checks on disk, and when the store cannot say).
    /// </summary>
    public static bool InStore(Db db, string stored)
    {
        if (db.Objects.IsDataFolder || UnitOf(db, Local(db, stored)) is not { } unit) return false;
        try { return db.Objects.HeadAsync(ObjectFiles.KeyOf(db, unit) + ObjectFiles.ManifestSuffix, CancellationToken.None).GetAwaiter().GetResult() is not null; }
        catch (ObjectStoreException) { return false; }
    }

    /// <summary>For a worker's claim: <see cref="EnsureNewestCheckpointAsync"/>, or why the object store could not give the checkpoint.</summary>
    public static string? FetchNewestCheckpoint(Db db, string jobId)
    {
        try
        {
            EnsureNewestCheckpointAsync(db, jobId, CancellationToken.None).GetAwaiter().GetResult();
            return null;
        }
        catch (ObjectStoreException e) { return $"the job's checkpoint could not be read from the object store: {e.Message}"; }
    }

    /// <summary>
    /// Before a job runs on this server (here or for a worker): its newest recorded checkpoint,
    /// fetched when this server lacks it, so a job another server ran continues where it stopped.
    /// </summary>
    public static async Task EnsureNewestCheckpointAsync(Db db, string jobId, CancellationToken ct)
    {
        if (db.Objects.IsDataFolder) return;
        List<string> paths;
        using (var conn = db.Connect())
            paths = Db.Query(conn, null, "SELECT path FROM checkpoints WHERE job_id = @id ORDER BY step DESC", r => r.GetString(0), ("@id", jobId));
        foreach (var stored in paths)
        {
            var local = await EnsureLocalAsync(db, stored, ct);
            if (JobOutput.IsCompleteCheckpoint(local)) return;
        }
    }
}
