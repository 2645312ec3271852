// Reading `files` rows into the wire FileObject, shared by the files API and job validation.
using Anneal.Core.Contracts;
using Anneal.Server.Storage;
using System.Data.Common;

namespace Anneal.Server.Files;

public static class FileRows
{
    public const string Columns = "rowid, id, org, filename, bytes, sha256, purpose, status, created_at, num_examples, num_tokens, errors, total_errors";

    public static FileObject Map(DbDataReader r) => new(
        Id: r.GetString(r.GetOrdinal("id")),
        Object: "file",
        Filename: r.GetString(r.GetOrdinal("filename")),
        Bytes: r.GetInt64(r.GetOrdinal("bytes")),
        Sha256: r.GetString(r.GetOrdinal("sha256")),
        Purpose: r.GetString(r.GetOrdinal("purpose")),
        Status: r.GetString(r.GetOrdinal("status")),
        CreatedAt: Db.ParseTime(r.GetString(r.GetOrdinal("created_at"))),
        NumExamples: (int?)Db.Long(r, "num_examples"),
        NumTokens: Db.Long(r, "num_tokens"),
        Errors: Db.FromJson<List<ErrorItem>>(Db.Str(r, "errors")),
        TotalErrors: (int?)Db.Long(r, "total_errors"));

    /// <summary>The org's file, or null (another organisation's file is treated as absent).</summary>
    public static FileObject? Find(DbConnection conn, DbTransaction? tx, string org, string id) =>
        Db.Query(conn, tx, $"SELECT {Columns} FROM files WHERE id = @id AND org = @org", Map, ("@id", id), ("@org", org))
            .FirstOrDefault();

    public static string BlobPath(Db db, string sha256) => Path.Combine(db.FilesDir, sha256);

    /// <summary>The blob's path after fetching it (and its images) from the object store when this server lacks it (FileBlobs).</summary>
    public static string EnsureLocal(Db db, string sha256) =>
        FileBlobs.EnsureLocalAsync(db, sha256, CancellationToken.None).GetAwaiter().GetResult() ?? BlobPath(db, sha256);
}
