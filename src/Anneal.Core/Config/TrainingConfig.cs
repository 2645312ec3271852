// The TOML training config of the spec (DESIGN.md §5). TODO(core): implement.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

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
    IReadOnlyDictionary<string, string> Tags);

/// <summary>A config error: file, key and what was expected.</summary>
public sealed record ConfigError(string File, string Key, string Message, int? Line = null)
{
    public override string ToString() => $"{File}{(Line is { } l ? $":{l}" : "")}: {Key}: {Message}";
}

public static class TrainingConfigLoader
{
    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Load(string path) =>
        throw new NotImplementedException("TrainingConfigLoader.Load");

    public static (TrainingConfig? Config, IReadOnlyList<ConfigError> Errors) Parse(string tomlText, string sourcePath) =>
        throw new NotImplementedException("TrainingConfigLoader.Parse");
}
