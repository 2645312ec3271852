// Files and folders of the data folder kept in the object store (ObjectStore.cs), by the path
// they have under the data folder. With the default store every call finds the file already in
// place and does nothing; with a bucket the data folder is a cache:
//   - Publish: the local file goes up with its sha256 before the caller acknowledges it.
//   - Ensure: a file missing locally is fetched into tmp/, its sha256 checked against the one
//     expected (or the one recorded with the object), then renamed into place; damaged bytes are
//     refused (ObjectStoreException) and never replace anything.
//   - Folders (a dataset's images, a checkpoint, a final model) go up file by file, then a
//     manifest `<folder>.manifest.json` listing every file with its sha256 and size: a folder is
//     complete in the store once its manifest is there (the same rule as a local folder renamed
//     into place), and is fetched aside and renamed into place whole.
using System.Security.Cryptography;
using System.Text.Json;

namespace Anneal.Server.Storage;

public static class ObjectFiles
{
    public const string ManifestSuffix = ".manifest.json";

    sealed record ManifestEntry(string Sha256, long Bytes);

    /// <summary>The key of a path under the data folder: its relative path with '/' separators.</summary>
    public static string KeyOf(Db db, string path)
    {
        var relative = Path.GetRelativePath(db.DataDir, Path.GetFullPath(path));
        if (relative == "." || relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative))
            throw new InvalidOperationException($"{path} is not inside the data folder {db.DataDir}");
        return relative.Replace(Path.DirectorySeparatorChar, '/');
    }

    public static async Task<string> Sha256Of(string file, CancellationToken ct)
    {
        await using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, FileOptions.Asynchronous);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
    }

    /// <summary>
    /// Puts the local file into the store under its key (nothing to do when the store is the data
    /// folder); <paramref name="from"/>: the bytes are still elsewhere (an upload's temp file).
    /// </summary>
    public static Task PublishAsync(Db db, string path, string sha256, CancellationToken ct, string? from = null) =>
        db.Objects.IsDataFolder ? Task.CompletedTask : db.Objects.PutAsync(KeyOf(db, path), from ?? path, sha256, ct);

    /// <summary>
    /// The file at <paramref name="path"/>, fetched from the store when it is not here. False when
    /// neither has it; throws <see cref="ObjectStoreException"/> when the stored bytes do not match
    /// <paramref name="sha256"/> (or, given none, the sha256 recorded with the object).
    /// </summary>
    public static async Task<bool> EnsureAsync(Db db, string path, string? sha256, CancellationToken ct)
    {
        if (File.Exists(path)) return true;
        if (db.Objects.IsDataFolder) return false;
        var key = KeyOf(db, path);
        if (sha256 is null)
        {
            if (await db.Objects.HeadAsync(key, ct) is not { } head) return false;
            sha256 = head.Sha256 ?? throw new ObjectStoreException($"object store {db.Objects.Name}: '{key}' carries no sha256 to check it against");
        }
        var temp = Path.Combine(db.TmpDir, $"fetch-{Guid.NewGuid():n}");
        try
        {
            if (!await db.Objects.GetAsync(key, temp, ct)) return false;
            var actual = await Sha256Of(temp, ct);
            if (actual != sha256)
                throw new ObjectStoreException(
                    $"object store {db.Objects.Name}: '{key}' is damaged: its bytes have sha256 {actual}, expected {sha256}; it was not used (put the right bytes back, or upload the file again)");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.Move(temp, path, overwrite: true);
            return true;
        }
        finally { File.Delete(temp); }
    }

    /// <summary>Removes the file here and in the store.</summary>
    public static async Task DeleteAsync(Db db, string path, CancellationToken ct)
    {
        File.Delete(path);
        if (!db.Objects.IsDataFolder) await db.Objects.DeleteAsync(KeyOf(db, path), ct);
    }

    /// <summary>Puts every file of the folder, then its manifest (which makes it complete in the store).</summary>
    public static async Task PublishFolderAsync(Db db, string dir, CancellationToken ct)
    {
        if (db.Objects.IsDataFolder) return;
        var manifest = new SortedDictionary<string, ManifestEntry>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
        {
            var sha = await Sha256Of(file, ct);
            await db.Objects.PutAsync(KeyOf(db, file), file, sha, ct);
            manifest[Path.GetRelativePath(dir, file).Replace(Path.DirectorySeparatorChar, '/')] = new ManifestEntry(sha, new FileInfo(file).Length);
        }
        var manifestFile = Path.Combine(db.TmpDir, $"manifest-{Guid.NewGuid():n}.json");
        try
        {
            await File.WriteAllTextAsync(manifestFile, JsonSerializer.Serialize(manifest, Core.Contracts.AnnealJson.Options), ct);
            await db.Objects.PutAsync(KeyOf(db, dir) + ManifestSuffix, manifestFile, await Sha256Of(manifestFile, ct), ct);
        }
        finally { File.Delete(manifestFile); }
    }

    /// <summary>
    /// The folder at <paramref name="dir"/>, fetched whole from the store when it is not here: every
    /// file its manifest lists, each sha256-checked, into a folder aside renamed into place. False
    /// when neither has it (or the store has no complete copy).
    /// </summary>
    public static async Task<bool> EnsureFolderAsync(Db db, string dir, CancellationToken ct)
    {
        if (Directory.Exists(dir)) return true;
        if (db.Objects.IsDataFolder) return false;
        var key = KeyOf(db, dir);
        var manifestPath = Path.Combine(db.TmpDir, $"manifest-{Guid.NewGuid():n}.json");
        var aside = Path.Combine(db.TmpDir, $"folder-{Guid.NewGuid():n}");
        try
        {
            if (!await EnsureManifest(db, key, manifestPath, ct)) return false;
            var manifest = JsonSerializer.Deserialize<Dictionary<string, ManifestEntry>>(await File.ReadAllTextAsync(manifestPath, ct), Core.Contracts.AnnealJson.Options)
                ?? throw new ObjectStoreException($"object store {db.Objects.Name}: '{key}{ManifestSuffix}' is empty");
            Directory.CreateDirectory(aside);
            foreach (var (relative, entry) in manifest)
            {
                if (relative.Split('/').Any(p => p is "" or "." or ".."))
                    throw new ObjectStoreException($"object store {db.Objects.Name}: '{key}{ManifestSuffix}' names '{relative}', not a path inside the folder");
                var target = Path.Combine(aside, relative.Replace('/', Path.DirectorySeparatorChar));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (!await db.Objects.GetAsync($"{key}/{relative}", target, ct))
                    throw new ObjectStoreException($"object store {db.Objects.Name}: '{key}/{relative}' is listed in the folder's manifest but missing");
                var actual = await Sha256Of(target, ct);
                if (actual != entry.Sha256)
                    throw new ObjectStoreException(
                        $"object store {db.Objects.Name}: '{key}/{relative}' is damaged: its bytes have sha256 {actual}, expected {entry.Sha256}; the folder was not used");
            }
            Directory.CreateDirectory(Path.GetDirectoryName(dir)!);
            try { Directory.Move(aside, dir); }
            catch (IOException) when (Directory.Exists(dir)) { }   // fetched meanwhile by another request: same bytes
            return true;
        }
        finally
        {
            File.Delete(manifestPath);
            if (Directory.Exists(aside)) Directory.Delete(aside, recursive: true);
        }
    }

    static async Task<bool> EnsureManifest(Db db, string key, string manifestPath, CancellationToken ct)
    {
        if (await db.Objects.HeadAsync(key + ManifestSuffix, ct) is not { } head) return false;
        if (!await db.Objects.GetAsync(key + ManifestSuffix, manifestPath, ct)) return false;
        if (head.Sha256 is { } sha && await Sha256Of(manifestPath, ct) is var actual && actual != sha)
            throw new ObjectStoreException($"object store {db.Objects.Name}: '{key}{ManifestSuffix}' is damaged: its bytes have sha256 {actual}, expected {sha}");
        return true;
    }

    /// <summary>Removes the folder here and every object under it in the store (its manifest first: the stored copy stops being complete at once).</summary>
    public static async Task DeleteFolderAsync(Db db, string dir, CancellationToken ct)
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        if (db.Objects.IsDataFolder) return;
        var key = KeyOf(db, dir);
        await db.Objects.DeleteAsync(key + ManifestSuffix, ct);
        foreach (var o in await db.Objects.ListAsync(key + "/", ct)) await db.Objects.DeleteAsync(o.Key, ct);
    }
}
