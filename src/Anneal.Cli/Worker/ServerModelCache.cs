// A job's base model fetched from the server (GET jobs/{id}/model, WorkerModels on the server) into
// the work folder: <work-dir>/server-models/<sha256 of the listing>/, so the same model is fetched
// once and a changed one (another sha256 anywhere) gets a folder of its own. Files arrive in
// "<folder>.partial/" through WorkerTransfers (a broken transfer keeps what arrived and asks for the
// rest with a Range request), each checked against its sha256; the folder is renamed into place
// when complete.
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Server.Workers;

namespace Anneal.Cli.Worker;

public static class ServerModelCache
{
    /// <summary>The local folder of the job's base model, or null when the server has no copy (its reason in <paramref name="why"/>).</summary>
    public static async Task<(string? Path, string? Why)> FetchAsync(HttpClient http, WorkerTransfers transfers, string jobId, string workDir, CancellationToken ct)
    {
        WorkerModel? manifest;
        using (var response = await http.GetAsync($"jobs/{jobId}/model", ct))
        {
            if (response.StatusCode == HttpStatusCode.NotFound)
                return (null, Problem(await response.Content.ReadAsStringAsync(ct)));
            if (!response.IsSuccessStatusCode)
                throw new HttpRequestException($"listing the base model answered {(int)response.StatusCode}: {Problem(await response.Content.ReadAsStringAsync(ct))}");
            manifest = await response.Content.ReadFromJsonAsync<WorkerModel>(AnnealJson.Options, ct);
        }
        if (manifest is null || manifest.Files.Count == 0)
            throw new InvalidDataException($"the server listed no files for the base model of job {jobId}");
        foreach (var f in manifest.Files)
            if (f.Path.Length == 0 || f.Path.Split('/').Any(p => p is "" or "." or "..") || Path.IsPathRooted(f.Path))
                throw new InvalidDataException($"the server listed a model file outside the model folder: '{f.Path}'");

        var listing = string.Join("\n", manifest.Files.Select(f => $"{f.Path}\t{f.Bytes}\t{f.Sha256}"));
        var folder = Path.Combine(workDir, "server-models", Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(listing))));
        if (Directory.Exists(folder)) return (folder, null);
        var partial = folder + ".partial";
        foreach (var file in manifest.Files)
            await FetchFileAsync(transfers, jobId, file, Path.Combine(partial, file.Path), ct);
        try { Directory.Move(partial, folder); }
        catch (IOException) when (Directory.Exists(folder)) { Directory.Delete(partial, recursive: true); } // another slot finished first
        return (folder, null);
    }

    static async Task FetchFileAsync(WorkerTransfers transfers, string jobId, WorkerModelFile file, string path, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        if (!(File.Exists(path) && new FileInfo(path).Length == file.Bytes && await Sha256Async(path, ct) == file.Sha256))
            await transfers.DownloadAsync($"jobs/{jobId}/model/{string.Join('/', file.Path.Split('/').Select(Uri.EscapeDataString))}", path, file.Sha256, ct);
        var actual = await Sha256Async(path, ct);
        if (actual != file.Sha256)
        {
            File.Delete(path);
            throw new WorkerAgent.TransferIntegrityException($"base model file {file.Path}: the downloaded bytes have sha256 {actual}, the server listed {file.Sha256}");
        }
    }

    static async Task<string> Sha256Async(string path, CancellationToken ct)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, ct));
    }

    static string Problem(string body)
    {
        try { return System.Text.Json.Nodes.JsonNode.Parse(body)?["detail"]?.GetValue<string>() ?? body; }
        catch (System.Text.Json.JsonException) { return body; }
    }
}
