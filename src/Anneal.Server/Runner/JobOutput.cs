// What a trainer left in <job>/output on disk, read when a job (re)starts and on crash recovery:
// the database only knows the checkpoints whose sft.checkpoint.saved event it received, but a
// trainer may have saved newer ones (or finished) while the server was down, and the trainer
// prunes optimizer.bin of older ones. The trainer writes every folder aside (`*.partial`) and
// renames it into place, so a step-N or final folder is complete once it exists.
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
}
