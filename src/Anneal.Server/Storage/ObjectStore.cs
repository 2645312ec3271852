// Where uploaded files and job outputs are kept for good (DESIGN §8 "one shared file store"):
//   - the data folder itself (default): the objects are the server's own files, nothing is copied;
//   - an S3-compatible bucket (`anneal serve --object-store s3://bucket/prefix`, S3ObjectStore.cs):
//     the data folder is then this server's cache of it, and servers on one PostgreSQL database
//     need not share a disk.
// Keys are paths relative to the data folder with '/' separators (`files/<sha256>`,
// `files/<sha256>.images/index.json`, `jobs/<job>/output/final/…`), so a cached copy lives at the
// same relative path on every server. Every object carries its sha256 (S3 user metadata), which
// a reader checks before it trusts a copy (ObjectFiles.cs).
namespace Anneal.Server.Storage;

/// <summary>One stored object: its key, size and the sha256 recorded when it was put (null if none was).</summary>
public sealed record StoredObject(string Key, long Bytes, string? Sha256, DateTime LastModifiedUtc);

/// <summary>A store that cannot be reached, refuses a request, or holds bytes that do not match their sha256.</summary>
public sealed class ObjectStoreException(string message, Exception? inner = null) : Exception(message, inner);

public interface IObjectStore : IDisposable
{
    /// <summary>For messages: "the data folder" or "s3://bucket/prefix".</summary>
    string Name { get; }

    /// <summary>The objects are the data folder's own files: nothing to publish or fetch.</summary>
    bool IsDataFolder { get; }

    /// <summary>Stores the local file under the key with its sha256; returns once the store has it durably.</summary>
    Task PutAsync(string key, string file, string sha256, CancellationToken ct);

    /// <summary>The object's size and recorded sha256, or null when there is none.</summary>
    Task<StoredObject?> HeadAsync(string key, CancellationToken ct);

    /// <summary>Writes the object's bytes to <paramref name="file"/> (created or replaced); false when there is no such object.</summary>
    Task<bool> GetAsync(string key, string file, CancellationToken ct);

    /// <summary>Every object whose key starts with <paramref name="prefix"/>.</summary>
    Task<IReadOnlyList<StoredObject>> ListAsync(string prefix, CancellationToken ct);

    /// <summary>Removes the object (nothing when absent).</summary>
    Task DeleteAsync(string key, CancellationToken ct);
}

/// <summary>The default: the data folder is the store. Objects are files at their key under it.</summary>
public sealed class DataFolderStore(string dataDir) : IObjectStore
{
    readonly string _root = Path.GetFullPath(dataDir);

    public string Name => "the data folder";
    public bool IsDataFolder => true;

    string PathOf(string key) => Path.Combine(_root, key.Replace('/', Path.DirectorySeparatorChar));

    public Task PutAsync(string key, string file, string sha256, CancellationToken ct)
    {
        var target = PathOf(key);
        if (Path.GetFullPath(file) != target) throw new InvalidOperationException($"{file} is not the data folder's copy of {key}");
        return Task.CompletedTask;
    }

    public Task<StoredObject?> HeadAsync(string key, CancellationToken ct)
    {
        var info = new FileInfo(PathOf(key));
        return Task.FromResult(info.Exists ? new StoredObject(key, info.Length, null, info.LastWriteTimeUtc) : null);
    }

    public Task<bool> GetAsync(string key, string file, CancellationToken ct) =>
        Task.FromResult(Path.GetFullPath(file) == PathOf(key) && File.Exists(file));

    public Task<IReadOnlyList<StoredObject>> ListAsync(string prefix, CancellationToken ct)
    {
        var slash = prefix.LastIndexOf('/');
        var dir = slash < 0 ? _root : PathOf(prefix[..slash]);
        IReadOnlyList<StoredObject> found = !Directory.Exists(dir) ? [] : Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Select(f => (Key: Path.GetRelativePath(_root, f).Replace(Path.DirectorySeparatorChar, '/'), Info: new FileInfo(f)))
            .Where(f => f.Key.StartsWith(prefix, StringComparison.Ordinal))
            .Select(f => new StoredObject(f.Key, f.Info.Length, null, f.Info.LastWriteTimeUtc))
            .ToList();
        return Task.FromResult(found);
    }

    public Task DeleteAsync(string key, CancellationToken ct)
    {
        File.Delete(PathOf(key));
        return Task.CompletedTask;
    }

    public void Dispose() { }
}
