namespace Anneal.Core.Tests;

/// <summary>Files of the repository, found by walking up from the test assembly to Anneal.slnx.</summary>
static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Of(params string[] parts) => Path.Combine([Root, .. parts]);

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Anneal.slnx"))) return dir.FullName;
        throw new DirectoryNotFoundException("Anneal.slnx not found above " + AppContext.BaseDirectory);
    }
}
