// What a trainer left in <job>/output on disk, read when a job (re)starts and on crash recovery:
// the database only knows the checkpoints whose sft.checkpoint.saved event it received, but a
// trainer may have saved newer ones (or finished) while the server was down, and the trainer
// prunes optimizer.bin of older ones. The trainer writes every folder aside (`*.partial`) and
// renames it into place, so a step-N or final folder is complete once it exists.
// Events show these paths relative to the job ("output/checkpoints/step-3"), never the server's
// absolute paths (the data folder's location is the server's business).
using System.Text.Json.Nodes;

namespace Anneal.Server.Runner;

public static class JobOutput
{
    // File names of the trainer's checkpoint layout (Anneal.Training.Checkpoints.TrainingCheckpoint).
    const string StateFile = "trainer_state.json", OptimizerFile = "optimizer.bin";
    const string PartialSuffix = ".partial";

    public static string CheckpointsDir(string outputDir) => Path.Combine(outputDir, "checkpoints");
    public static string FinalDir(string outputDir) => Path.Combine(outputDir, "final");

    /// <summary>A checkpoint the trainer can resume from: its state and optimizer moments are both there.</summary>
    public static bool IsCompleteCheckpoint(string folder) =>
        File.Exists(Path.Combine(folder, StateFile)) && File.Exists(Path.Combine(folder, OptimizerFile));

    /// <summary>The highest step-N checkpoint with its optimizer state, or null.</summary>
    public static (int Step, string Path)? NewestCompleteCheckpoint(string outputDir)
    {
        var dir = CheckpointsDir(outputDir);
        if (!Directory.Exists(dir)) return null;
        return Directory.GetDirectories(dir, "step-*")
            .Select(d => (Step: int.TryParse(Path.GetFileName(d)["step-".Length..], out var n) ? n : -1, Path: d))
            .Where(c => c.Step >= 0 && IsCompleteCheckpoint(c.Path))
            .OrderByDescending(c => c.Step)
            .Select(c => ((int, string)?)c)
            .FirstOrDefault();
    }

    /// <summary>The final/ folder of a trainer that finished (written aside and renamed), or null.</summary>
    public static string? FinishedFinal(string outputDir)
    {
        var final = FinalDir(outputDir);
        return Directory.Exists(final) && Directory.EnumerateFileSystemEntries(final).Any() ? final : null;
    }

    /// <summary>Removes half-written folders (`step-N.partial`, `final.partial`) a killed trainer left behind.</summary>
    public static void RemovePartials(string outputDir)
    {
        var candidates = new List<string>();
        if (Directory.Exists(CheckpointsDir(outputDir))) candidates.AddRange(Directory.GetDirectories(CheckpointsDir(outputDir), "*" + PartialSuffix));
        if (Directory.Exists(outputDir)) candidates.AddRange(Directory.GetDirectories(outputDir, "*" + PartialSuffix));
        foreach (var dir in candidates)
        {
            try { Directory.Delete(dir, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>The text with the job folder's absolute path (and the data folder's) left out.</summary>
    public static string Relative(string text, string jobDir)
    {
        var job = jobDir.TrimEnd(Path.DirectorySeparatorChar);
        var dataDir = Path.GetDirectoryName(Path.GetDirectoryName(job));
        text = text.Replace(job + Path.DirectorySeparatorChar, "", StringComparison.Ordinal).Replace(job, ".", StringComparison.Ordinal);
        return dataDir is null ? text : text.Replace(dataDir + Path.DirectorySeparatorChar, "", StringComparison.Ordinal);
    }

    /// <summary>A copy of event data with every string made <see cref="Relative(string, string)"/>.</summary>
    public static JsonObject? Relative(JsonObject? data, string jobDir)
    {
        if (data is null) return null;
        var copy = (JsonObject)data.DeepClone();
        Rewrite(copy, jobDir);
        return copy;
    }

    static void Rewrite(JsonNode node, string jobDir)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (key, value) in o.ToList())
                    if (value is JsonValue v && v.TryGetValue<string>(out var s)) o[key] = Relative(s, jobDir);
                    else if (value is not null) Rewrite(value, jobDir);
                break;
            case JsonArray a:
                for (var i = 0; i < a.Count; i++)
                    if (a[i] is JsonValue v && v.TryGetValue<string>(out var s)) a[i] = Relative(s, jobDir);
                    else if (a[i] is { } child) Rewrite(child, jobDir);
                break;
        }
    }
}
