// A job's base model as this server has it, for a worker whose host does not: the model folder
// the server's own trainer would use (ModelPaths, without downloading), listed file by file with
// sizes and sha256, and each file served on its own with HTTP Range, so a worker fetches what it
// lacks, resumes a broken transfer where it stopped and checks every byte. This is how a worker
// gets a fine-tuned model (ft:/fft:/qft: ids) to continue from, or a registry model the server
// holds when the worker's host is offline.
//   GET jobs/{id}/model          → WorkerModel (404 when the server has no copy, with the reason)
//   GET jobs/{id}/model/{*path}  → one listed file's bytes (Range; X-Content-SHA256)
using System.Collections.Concurrent;
using System.Security.Cryptography;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Runner;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Workers;

public static class WorkerModels
{
    // sha256 of model files by (path, length, last write): a multi-GB folder is hashed once per change.
    static readonly ConcurrentDictionary<(string Path, long Length, DateTime Written), string> Hashes = new();

    public static async Task<Results<Ok<WorkerModel>, ProblemHttpResult>> Manifest(string id, Db db, ServerOptions options, HttpContext http)
    {
        var (folder, problem) = await FolderOf(id, db, options, http.RequestAborted);
        if (problem is not null) return problem;
        return TypedResults.Ok(await ListAsync(folder!.Value.Model, folder.Value.Path, http.RequestAborted));
    }

    public static async Task<Results<FileStreamHttpResult, ProblemHttpResult>> FileBytes(string id, string path, Db db, ServerOptions options, HttpContext http)
    {
        var (folder, problem) = await FolderOf(id, db, options, http.RequestAborted);
        if (problem is not null) return problem;
        // Only a listed file: a path from the listing, never one that leaves the folder.
        var manifest = await ListAsync(folder!.Value.Model, folder.Value.Path, http.RequestAborted);
        if (manifest.Files.FirstOrDefault(f => f.Path == path) is not { } file) return Problems.NotFound("model file", path);
        http.Response.Headers[WorkerProtocol.Sha256Header] = file.Sha256;
        var full = Path.Combine(folder.Value.Path, file.Path);
        return TypedResults.File(new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read), "application/octet-stream",
            entityTag: new Microsoft.Net.Http.Headers.EntityTagHeaderValue($"\"{file.Sha256}\""), enableRangeProcessing: true);
    }

    static async Task<((string Model, string Path)? Folder, ProblemHttpResult? Problem)> FolderOf(string id, Db db, ServerOptions options, CancellationToken ct)
    {
        JobRow? job;
        using (var conn = db.Connect()) job = JobRows.FindAny(conn, null, id);
        if (job is null) return (null, Problems.NotFound("job", id));
        var (path, error) = await ModelPaths.ResolveAsync(db, options with { AllowModelDownload = false }, job.Org, job.Wire.Model, _ => { }, ct);
        if (path is null || !Directory.Exists(path))
            return (null, Problems.Make(404, "model_not_on_server", "Model not on this server",
                $"The server has no copy of '{job.Wire.Model}' to send: {error ?? $"{path} does not exist"}."));
        return ((job.Wire.Model, path), null);
    }

    static async Task<WorkerModel> ListAsync(string model, string folder, CancellationToken ct)
    {
        var files = new List<WorkerModelFile>();
        foreach (var full in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(folder, full).Replace(Path.DirectorySeparatorChar, '/');
            if (relative.Split('/').Any(part => part.StartsWith('.')) || relative.EndsWith(".partial", StringComparison.Ordinal)) continue;
            // Hugging Face cache snapshots hold links to blobs: describe the file they lead to.
            var info = new FileInfo(full);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
            var key = (info.FullName, info.Length, info.LastWriteTimeUtc);
            if (!Hashes.TryGetValue(key, out var sha))
            {
                await using var stream = info.OpenRead();
                sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
                Hashes[key] = sha;
            }
            files.Add(new WorkerModelFile(relative, info.Length, sha));
        }
        return new WorkerModel(model, files);
    }
}
