// Entry points of the trainer process (`anneal trainer run --spec PATH`), see
// Anneal.Core.Training.TrainerProtocol for the contract with the control plane.
// TODO(trainer): implement. Signatures agreed with the CLI and the server.
using Anneal.Core.Training;

namespace Anneal.Training;

public static class TrainerProcess
{
    /// <summary>Exit codes of the trainer process.</summary>
    public const int ExitSucceeded = 0, ExitFailed = 1, ExitUserError = 2, ExitCancelled = 130;

    /// <summary>Reads the spec file, trains, writes TrainerEvent JSON lines to stdout.</summary>
    public static Task<int> RunAsync(string specPath, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        throw new NotImplementedException("TrainerProcess.RunAsync");

    /// <summary>Same, for a spec built in memory (`anneal train-local`).</summary>
    public static Task<int> RunAsync(TrainerJobSpec spec, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        throw new NotImplementedException("TrainerProcess.RunAsync");

    /// <summary>Greedy/sampled answer from a model folder (`anneal generate`), for the demo and smoke tests.</summary>
    public static Task<int> GenerateAsync(string modelDir, string prompt, int maxNewTokens, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        throw new NotImplementedException("TrainerProcess.GenerateAsync");
}
