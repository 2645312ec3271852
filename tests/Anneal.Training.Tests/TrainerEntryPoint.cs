// This test assembly doubles as a trainer executable, so a real server can launch the real trainer
// in tests:  dotnet Anneal.Training.Tests.dll trainer run --spec PATH  (the server's command shape).
// The test host never calls Main; it loads the assembly as a library.
using Anneal.Training.Native;

namespace Anneal.Training.Tests;

public static class TrainerEntryPoint
{
    public static int Main(string[] args)
    {
        if (args is not ["trainer", "run", "--spec", var spec])
        {
            Console.Error.WriteLine("usage: Anneal.Training.Tests.dll trainer run --spec PATH");
            return 64;
        }
        NativeLibraries.EnsureTorchLoaded();
        TorchSharp.torch.set_num_threads(1);
        using var stop = new CancellationTokenSource();
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            stop.Cancel();
        });
        return TrainerProcess.RunAsync(spec, Console.Out, Console.Error, stop.Token).GetAwaiter().GetResult();
    }

    /// <summary>The command prefix that runs <see cref="Main"/>: the dotnet host and this assembly.</summary>
    public static IReadOnlyList<string> Command()
    {
        // Under the test host ProcessPath is testhost; dotnet sits three folders above the runtime
        // (<root>/shared/Microsoft.NETCore.App/<version>/).
        var processPath = Environment.ProcessPath ?? "dotnet";
        var dotnet = Path.GetFileNameWithoutExtension(processPath) == "dotnet"
            ? processPath
            : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "..", "..", "..", "dotnet"));
        return [File.Exists(dotnet) ? dotnet : "dotnet", typeof(TrainerEntryPoint).Assembly.Location];
    }
}
