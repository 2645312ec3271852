// Where a dataset path given on the command line or in the TOML points: absolute paths as they
// are; relative ones are tried against the working directory, then the config's folder, and a
// failure names both places (DESIGN.md §8: upstream only tried the working directory).
namespace Anneal.Cli.Train;

public static class DatasetPaths
{
    public static (string? Path, string? Error) Resolve(string given, string workingDir, string configDir, string what)
    {
        if (System.IO.Path.IsPathRooted(given))
            return File.Exists(given) ? (given, null)
                : Directory.Exists(given) ? (null, $"{what} {given}: is a directory; expected a JSONL file")
                : (null, $"{what} {given}: file not found");
        var fromCwd = System.IO.Path.GetFullPath(given, workingDir);
        if (File.Exists(fromCwd)) return (fromCwd, null);
        var fromConfig = System.IO.Path.GetFullPath(given, configDir);
        if (File.Exists(fromConfig)) return (fromConfig, null);
        foreach (var candidate in new[] { fromCwd, fromConfig })
            if (Directory.Exists(candidate)) return (null, $"{what} {given}: {candidate} is a directory; expected a JSONL file");
        return (null, fromCwd == fromConfig
            ? $"{what} {given}: file not found ({fromCwd})"
            : $"{what} {given}: file not found; looked in the working directory ({fromCwd}) and next to the config ({fromConfig})");
    }
}
