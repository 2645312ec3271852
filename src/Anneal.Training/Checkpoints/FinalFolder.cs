// A run's result, `<output>/final/`, written aside (`final.partial`) and renamed when complete, so
// a final/ folder is always whole and a restarted server can adopt it (JobOutput.FinishedFinal).
namespace Anneal.Training.Checkpoints;

public static class FinalFolder
{
    /// <summary>Runs `write` on a fresh staging folder, then moves it to `<outputDir>/final`; returns that path.</summary>
    public static string Write(string outputDir, Action<string> write)
    {
        var final = Path.Combine(outputDir, "final");
        var staging = final + ".partial";
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        write(staging);
        if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
        Directory.Move(staging, final);
        return final;
    }
}
