// What `anneal worker` and the server say to each other over /api/workers (WorkersApi). A worker
// claims a job under a lease (owner + attempt: the fencing token), sends every call with it, and
// gets 409 lease_lost once the job is no longer its own (lapsed and recovered, or cancelled).
// Trainer stdout lines travel as the trainer wrote them, with the worker's output folder written
// as OutputPlaceholder; the server puts its own copy of the job's output folder in its place.
using Anneal.Core.Training;

namespace Anneal.Server.Workers;

public static class WorkerProtocol
{
    public const string OutputPlaceholder = "${ANNEAL_OUTPUT}";
    /// <summary>Header of an artifact upload: the hex sha256 of the tar body.</summary>
    public const string Sha256Header = "X-Content-SHA256";
    public const string LeaseLost = "lease_lost";
}

/// <summary>
/// A worker asking for a job: the GPUs free on it now (none: a CPU slot) and their type, matched
/// against jobs' [compute]; a job asking for k GPUs takes k of them and runs as k ranks. CpuRanks: a
/// CPU slot runs a job's gpu_count > 1 as that many CPU ranks (development and tests, as `serve --cpu-ranks`).
/// </summary>
public sealed record WorkerClaimRequest(string Worker, IReadOnlyList<string>? Gpus = null, string? GpuType = null, bool CpuRanks = false);

public sealed record WorkerFile(string Id, string Name, string Sha256, long Bytes);

/// <summary>A claimed job: everything a worker needs to write the trainer's spec, plus its lease.</summary>
public sealed record WorkerClaim(
    string JobId, string Owner, long Attempt, double LeaseSeconds,
    string Model, TrainingSettings Settings, bool MergeLora,
    WorkerFile TrainingFile, WorkerFile? ValidationFile,
    /// <summary>Relative to the job's output folder (e.g. checkpoints/step-3): download it and resume from it.</summary>
    string? ResumeFrom,
    /// <summary>Trainer ranks: the first Ranks of the GPUs offered (or CPU ranks), launched together by mpirun when more than one.</summary>
    int Ranks = 1);

public sealed record WorkerLease(string Owner, long Attempt);

public sealed record WorkerLines(string Owner, long Attempt, IReadOnlyList<string> Lines);

public sealed record WorkerExit(string Owner, long Attempt, int ExitCode, IReadOnlyList<string> Lines, IReadOnlyList<string>? LogTail = null);

/// <summary>A job's base model as the server has it: every file with its size and sha256 (paths use '/').</summary>
public sealed record WorkerModel(string Model, IReadOnlyList<WorkerModelFile> Files);

public sealed record WorkerModelFile(string Path, long Bytes, string Sha256);
