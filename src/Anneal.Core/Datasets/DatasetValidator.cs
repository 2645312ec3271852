// JSONL chat dataset validation (DESIGN.md §6), shared by the server (after upload) and the CLI
// (before upload). TODO(core): implement the rules; this is the agreed signature.
using Anneal.Core.Contracts;

namespace Anneal.Core.Datasets;

public sealed record DatasetValidationOptions(int MaxErrorsShown = 20, bool Vision = false, int MaxImagesPerMessage = 1);

/// <summary>Result of validating a dataset: Errors holds at most MaxErrorsShown, TotalErrors counts all.</summary>
public sealed record DatasetReport(int NumExamples, IReadOnlyList<ErrorItem> Errors, int TotalErrors)
{
    public bool IsValid => TotalErrors == 0 && NumExamples > 0;
}

public static class DatasetValidator
{
    /// <summary>Validates a JSONL stream without holding it whole in memory.</summary>
    public static DatasetReport Validate(Stream jsonl, DatasetValidationOptions? options = null) =>
        throw new NotImplementedException("DatasetValidator.Validate");

    public static DatasetReport ValidateFile(string path, DatasetValidationOptions? options = null)
    {
        using var stream = File.OpenRead(path);
        return Validate(stream, options);
    }
}
