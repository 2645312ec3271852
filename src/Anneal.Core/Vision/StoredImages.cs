// Images a dataset refers to by https URL, fetched once by the server while the upload is validated
// and kept beside the dataset, so training never touches the network and a re-run trains on the
// same bytes. Layout beside `<dataset>`:
//   <dataset>.images/index.json    {"https://host/a.png": "<sha256 hex>", ...}
//   <dataset>.images/<sha256 hex>  the bytes as fetched (content-addressed: equal images stored once)
using System.Security.Cryptography;
using System.Text.Json;

namespace Anneal.Core.Vision;

public static class StoredImages
{
    public const string IndexFile = "index.json";

    public static string FolderFor(string datasetPath) => datasetPath + ".images";

    /// <summary>Looks a URL up in the folder beside the dataset: its bytes (hash checked), or null when it was not stored.</summary>
    public static Func<string, byte[]?> Resolver(string datasetPath)
    {
        var folder = FolderFor(datasetPath);
        var indexPath = Path.Combine(folder, IndexFile);
        var index = File.Exists(indexPath)
            ? JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(indexPath)) ?? []
            : [];
        return url =>
        {
            if (!index.TryGetValue(url, out var hash)) return null;
            var bytes = File.ReadAllBytes(Path.Combine(folder, hash));
            if (Hash(bytes) != hash) throw new InvalidDataException($"stored image {hash} for {url} does not match its hash");
            return bytes;
        };
    }

    /// <summary>
    /// The bytes of one of this dataset's stored images named by its content hash (64 lowercase hex
    /// digits, listed in the dataset's index, hash checked), or null when the dataset stored none
    /// such. Nothing outside the dataset's own image folder is ever read.
    /// </summary>
    public static byte[]? ReadByHash(string datasetPath, string hash)
    {
        if (hash.Length != 64 || !hash.All(char.IsAsciiHexDigitLower)) return null;
        var folder = FolderFor(datasetPath);
        var indexPath = Path.Combine(folder, IndexFile);
        if (!File.Exists(indexPath)) return null;
        var index = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(indexPath)) ?? [];
        if (!index.ContainsValue(hash)) return null;
        var bytes = File.ReadAllBytes(Path.Combine(folder, hash));
        if (Hash(bytes) != hash) throw new InvalidDataException($"stored image {hash} does not match its hash");
        return bytes;
    }

    public static string Hash(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>
    /// Writes the images (url → bytes) beside the dataset: into a temporary folder renamed into place,
    /// so a reader sees the whole folder or none. An existing folder (the same upload again) is replaced.
    /// </summary>
    public static void Write(string datasetPath, IReadOnlyDictionary<string, byte[]> images)
    {
        var target = FolderFor(datasetPath);
        var folder = $"{target}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(folder);
        var index = new Dictionary<string, string>();
        foreach (var (url, bytes) in images)
        {
            var hash = Hash(bytes);
            var file = Path.Combine(folder, hash);
            if (!File.Exists(file)) File.WriteAllBytes(file, bytes);
            index[url] = hash;
        }
        File.WriteAllText(Path.Combine(folder, IndexFile), JsonSerializer.Serialize(index));
        if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
        Directory.Move(folder, target);
    }
}
