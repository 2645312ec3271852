// The TOML training config of the spec (DESIGN.md §5) once loaded and validated, and the pieces of
// the job payload built from it. The loader is TrainingConfigLoader.cs.
using System.Text.Json.Nodes;
using Anneal.Core.Training;

namespace Anneal.Core.Config;

/// <summary>A loaded, validated TOML config, and the pieces of the job payload built from it.</summary>
public sealed record TrainingConfig(
    string SourcePath,
    string Model,
    string? DataPath,
    string? ValidationPath,
    double? PollSeconds,
    JsonObject Hyperparameters,
    JsonObject EffectiveConfig,
    int? MaxImagesPerMessage,
    IReadOnlyDictionary<string, string> Tags)
{
    /// <summary>The normalised settings (JobSettings.Normalize of the payload above): what the job will train with.</summary>
    public required JobSettings Settings { get; init; }

    /// <summary>Keys accepted but without effect here, each naming the TOML key (also in Settings.Warnings for payload keys).</summary>
    public IReadOnlyList<ConfigError> Warnings { get; init; } = [];

    /// <summary>
    /// Finds a data file named in the config (or on the command line): an absolute path as is; a
    /// relative one first against the working directory, then against the config file's folder.
    /// Returns the full path of the first that exists, or null; <paramref name="tried"/> lists
    /// every full path looked at, for the error message.
    /// </summary>
    public string? ResolveDataPath(string path, out string[] tried)
    {
        var candidates = Path.IsPathRooted(path)
            ? [Path.GetFullPath(path)]
            : new[]
            {
                Path.GetFullPath(path),
                Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(SourcePath)) ?? ".", path)),
            }.Distinct().ToArray();
        tried = candidates;
        return candidates.FirstOrDefault(File.Exists);
    }
}

/// <summary>A config error: file, key and what was expected.</summary>
public sealed record ConfigError(string File, string Key, string Message, int? Line = null)
{
    public override string ToString() => $"{File}{(Line is { } l ? $":{l}" : "")}: {Key}: {Message}";
}
