// Finds the local Hugging Face folder (config.json, *.safetensors, tokenizer.json, ...) of a model id
// such as "Qwen/Qwen3-0.6B", in this order (DESIGN.md §7):
//   1. the configured models folder:  <models>/Qwen/Qwen3-0.6B/config.json
//   2. the Hugging Face cache:        <hub>/models--Qwen--Qwen3-0.6B/snapshots/<refs/main>/config.json
//      (<hub> = $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//   3. a download from the Hub (HF_ENDPOINT, HF_TOKEN) into the models folder, as in 1.
// The built-in tiny model is never downloaded: the trainer generates it at <models>/anneal/tiny-qwen3.
using System.Text.RegularExpressions;

namespace Anneal.Core.Models;

/// <summary>Where models are looked for and fetched from.</summary>
public sealed record ModelSources(string? ModelsDir, string? HubCacheDir, string? Endpoint = null, string? Token = null, bool AllowDownload = true)
{
    /// <summary>The models folder given, the cache and Hub settings from HF_HUB_CACHE/HF_HOME, HF_ENDPOINT, HF_TOKEN.</summary>
    public static ModelSources FromEnvironment(string? modelsDir, bool allowDownload = true) =>
        new(modelsDir, ModelResolver.DefaultHubCacheDir(), Environment.GetEnvironmentVariable("HF_ENDPOINT"),
            Environment.GetEnvironmentVariable("HF_TOKEN") ?? Environment.GetEnvironmentVariable("HUGGING_FACE_HUB_TOKEN"),
            allowDownload);
}

public static partial class ModelResolver
{
    public static string? DefaultHubCacheDir()
    {
        if (Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } hubCache) return hubCache;
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } hfHome) return Path.Combine(hfHome, "hub");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return home.Length > 0 ? Path.Combine(home, ".cache", "huggingface", "hub") : null;
    }

    /// <summary>"Org/Name" with letters, digits, '.', '_' and '-' only (also keeps ids from escaping the models folder).</summary>
    public static bool IsValidId(string modelId) => RepoId().IsMatch(modelId) && !modelId.Split('/').Any(p => p is "." or "..");

    /// <summary>The folder a model has (or will have) under the models folder: &lt;models&gt;/Org/Name.</summary>
    public static string ModelsFolderPath(string modelsDir, string modelId) =>
        Path.Combine([modelsDir, .. modelId.Split('/')]);

    /// <summary>The local folder of a model without downloading, or null.</summary>
    public static string? FindLocal(string modelId, ModelSources sources)
    {
        if (!IsValidId(modelId)) return null;
        if (sources.ModelsDir is { } models)
        {
            var dir = ModelsFolderPath(models, modelId);
            if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        }
        return sources.HubCacheDir is { } hub ? FindInHubCache(hub, modelId) : null;
    }

    /// <summary>models--Org--Name/snapshots/&lt;revision&gt;, the revision named by refs/main when there is one.</summary>
    public static string? FindInHubCache(string hubCacheDir, string modelId)
    {
        var repo = Path.Combine(hubCacheDir, "models--" + modelId.Replace("/", "--"));
        var snapshots = Path.Combine(repo, "snapshots");
        if (!Directory.Exists(snapshots)) return null;
        var refMain = Path.Combine(repo, "refs", "main");
        if (File.Exists(refMain))
        {
            var revision = File.ReadAllText(refMain).Trim();
            var dir = Path.Combine(snapshots, revision);
            if (revision.Length > 0 && File.Exists(Path.Combine(dir, "config.json"))) return dir;
        }
        // No usable refs/main (e.g. a snapshot copied in by hand): the newest snapshot with a config.
        return new DirectoryInfo(snapshots).GetDirectories()
            .Where(d => File.Exists(Path.Combine(d.FullName, "config.json")))
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .Select(d => d.FullName)
            .FirstOrDefault();
    }

    /// <summary>
    /// The local folder of <paramref name="modelId"/>, downloading it into the models folder when it
    /// is nowhere on disk. Throws <see cref="ModelDownloadException"/> with a message for the user.
    /// </summary>
    public static async Task<string> ResolveAsync(string modelId, ModelSources sources,
        Action<DownloadProgress>? progress = null, HttpMessageHandler? handler = null, CancellationToken ct = default)
    {
        if (!IsValidId(modelId))
            throw new ModelDownloadException($"\"{modelId}\" is not a model id of the form Org/Name");
        if (ModelRegistry.IsBuiltIn(modelId))
        {
            if (sources.ModelsDir is null)
                throw new ModelDownloadException($"{modelId} is generated into the models folder, but none is configured");
            return ModelsFolderPath(sources.ModelsDir, ModelRegistry.Find(modelId)!.Id);
        }
        if (FindLocal(modelId, sources) is { } local) return local;

        var looked = new List<string>();
        if (sources.ModelsDir is { } m) looked.Add(ModelsFolderPath(m, modelId));
        if (sources.HubCacheDir is { } h) looked.Add(Path.Combine(h, "models--" + modelId.Replace("/", "--")));
        var where = looked.Count > 0 ? $" (looked in {string.Join(" and ", looked)})" : "";
        if (!sources.AllowDownload)
            throw new ModelDownloadException($"{modelId} is not on this machine{where} and downloads are switched off");
        if (sources.ModelsDir is null)
            throw new ModelDownloadException($"{modelId} is not on this machine{where} and no models folder is configured to download it into");

        using var hub = new HubDownloader(sources.Endpoint, sources.Token, handler);
        return await hub.DownloadAsync(modelId, ModelsFolderPath(sources.ModelsDir, modelId), progress, ct);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex RepoId();
}
