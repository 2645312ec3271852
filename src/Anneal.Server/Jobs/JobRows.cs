// Reading `jobs` rows into the wire JobObject, and the guarded status transitions
// (created → queued → running → succeeded | failed | cancelled) every writer goes through.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;
using Anneal.Server.Storage;
using System.Data.Common;

namespace Anneal.Server.Jobs;

public sealed record JobRow(JobObject Wire, string Org, string Mode, int Restarts, string? ResumeFrom, string? IdempotencyKey, string? RequestHash,
    JobSettings? Settings = null)
{
    /// <summary>
    /// The settings normalised at creation; for a job stored before they were kept, the stored
    /// request normalised now (the same function, so the same result).
    /// </summary>
    public (JobSettings? Settings, IReadOnlyList<ErrorItem> Errors) EffectiveSettings() =>
        Settings is not null ? (Settings, []) : JobSettings.Normalize(Wire.Hyperparameters, Wire.Metadata, Wire.ValidationFileId);
}

public static class JobRows
{
    public const string Columns = """
        rowid, id, org, status, model, mode, training_type, training_file_id, validation_file_id, hyperparameters,
        metadata, suffix, created_at, started_at, finished_at, fine_tuned_model, trained_tokens, error, progress,
        idempotency_key, request_hash, restarts, resume_from, settings, weights_step,
        (SELECT MAX(e.created_at) FROM job_events e WHERE e.job_id = jobs.id) AS updated_at
        """;

    public static JobRow Map(DbDataReader r)
    {
        var id = r.GetString(r.GetOrdinal("id"));
        var wire = new JobObject(
            Id: id,
            JobId: id,
            Object: "fine_tuning.job",
            Status: r.GetString(r.GetOrdinal("status")),
            Model: r.GetString(r.GetOrdinal("model")),
            TrainingType: r.GetString(r.GetOrdinal("training_type")),
            TrainingFileId: r.GetString(r.GetOrdinal("training_file_id")),
            ValidationFileId: Db.Str(r, "validation_file_id"),
            Hyperparameters: JsonNode.Parse(r.GetString(r.GetOrdinal("hyperparameters"))) as JsonObject ?? [],
            Metadata: Db.Str(r, "metadata") is { } m ? JsonNode.Parse(m) as JsonObject : null,
            Suffix: Db.Str(r, "suffix"),
            CreatedAt: Db.ParseTime(r.GetString(r.GetOrdinal("created_at"))),
            UpdatedAt: Db.Str(r, "updated_at") is { } u ? Db.ParseTime(u) : null,
            StartedAt: Db.Str(r, "started_at") is { } s ? Db.ParseTime(s) : null,
            FinishedAt: Db.Str(r, "finished_at") is { } f ? Db.ParseTime(f) : null,
            FineTunedModel: Db.Str(r, "fine_tuned_model"),
            TrainedTokens: Db.Long(r, "trained_tokens"),
            WeightsStep: Db.Long(r, "weights_step"),
            Error: Db.FromJson<JobError>(Db.Str(r, "error")),
            Progress: Db.FromJson<JobProgress>(Db.Str(r, "progress")));
        return new JobRow(wire, r.GetString(r.GetOrdinal("org")), r.GetString(r.GetOrdinal("mode")),
            (int)r.GetInt64(r.GetOrdinal("restarts")), Db.Str(r, "resume_from"), Db.Str(r, "idempotency_key"), Db.Str(r, "request_hash"),
            Db.FromJson<JobSettings>(Db.Str(r, "settings")));
    }

    /// <summary>The org's job, or null (another organisation's job is treated as absent).</summary>
    public static JobRow? Find(DbConnection conn, DbTransaction? tx, string org, string id) =>
        Db.Query(conn, tx, $"SELECT {Columns} FROM jobs WHERE id = @id AND org = @org", Map, ("@id", id), ("@org", org)).FirstOrDefault();

    public static JobRow? FindAny(DbConnection conn, DbTransaction? tx, string id) =>
        Db.Query(conn, tx, $"SELECT {Columns} FROM jobs WHERE id = @id", Map, ("@id", id)).FirstOrDefault();

    /// <summary>
    /// Moves a job from one of <paramref name="from"/> to <paramref name="to"/> and stamps the matching
    /// time column; false when the job is in another status (the caller reports the current one).
    /// </summary>
    public static bool Transition(DbConnection conn, DbTransaction? tx, string id, string[] from, string to)
    {
        var stamp = to switch
        {
            JobStatus.Queued => ", queued_at = @t",
            JobStatus.Running => ", started_at = COALESCE(started_at, @t)",
            _ when JobStatus.IsTerminal(to) => ", finished_at = @t",
            _ => "",
        };
        var args = new List<(string, object?)> { ("@id", id), ("@to", to), ("@t", Db.Now()) };
        var names = new List<string>();
        for (var i = 0; i < from.Length; i++) { names.Add($"@f{i}"); args.Add(($"@f{i}", from[i])); }
        return Db.Exec(conn, tx, $"UPDATE jobs SET status = @to{stamp} WHERE id = @id AND status IN ({string.Join(", ", names)})", [.. args]) == 1;
    }
}
