// Downloads a model repository from the Hugging Face Hub (or a mirror: HF_ENDPOINT) into a plain
// folder, the files a trainer needs and nothing else. Wire protocol (as the Hub serves it):
//   GET {endpoint}/api/models/{id}/revision/main      → {"sha": "...", "siblings": [{"rfilename": "config.json"}, ...]}
//   GET {endpoint}/{id}/resolve/main/{file}           → 200 with the bytes, or 302 to a CDN for LFS files;
//       the first response carries X-Linked-Etag (LFS: the file's sha256) / ETag and X-Linked-Size.
// Each file streams into `<file>.incomplete`, resumes with `Range: bytes=N-` after an interruption,
// is checked against its sha256 when the Hub gives one, and is renamed into place only when whole.
// config.json is fetched last, so a folder holding config.json is a complete download.
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Anneal.Core.Models;

/// <summary>Progress of one file: bytes on disk so far and the total when the server said it.</summary>
public readonly record struct DownloadProgress(string ModelId, string File, long BytesDone, long? BytesTotal);

/// <summary>A model could not be found or fetched; the message names the model, the endpoint and what to do.</summary>
public sealed class ModelDownloadException(string message, Exception? inner = null) : Exception(message, inner);

public sealed partial class HubDownloader : IDisposable
{
    public const string DefaultEndpoint = "https://huggingface.co";
    const int MaxRedirects = 5;
    const long ProgressStepBytes = 8 * 1024 * 1024;

    static readonly string[] ExactFiles =
        ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"];

    readonly HttpClient http;

    public string Endpoint { get; }
    string? Token { get; }

    /// <param name="endpoint">Hub base URL (HF_ENDPOINT); default https://huggingface.co.</param>
    /// <param name="token">Bearer token (HF_TOKEN), sent to the Hub only, not to CDN redirects.</param>
    /// <param name="handler">For tests or proxies; redirects are followed here, not by the handler.</param>
    public HubDownloader(string? endpoint = null, string? token = null, HttpMessageHandler? handler = null)
    {
        Endpoint = (string.IsNullOrWhiteSpace(endpoint) ? DefaultEndpoint : endpoint).TrimEnd('/');
        Token = string.IsNullOrWhiteSpace(token) ? null : token;
        http = new HttpClient(handler ?? new SocketsHttpHandler { AllowAutoRedirect = false }, disposeHandler: handler is null)
        {
            Timeout = Timeout.InfiniteTimeSpan, // large files; cancellation comes from the caller
        };
    }

    public static HubDownloader FromEnvironment() =>
        new(Environment.GetEnvironmentVariable("HF_ENDPOINT"), Environment.GetEnvironmentVariable("HF_TOKEN")
            ?? Environment.GetEnvironmentVariable("HUGGING_FACE_HUB_TOKEN"));

    public void Dispose() => http.Dispose();

    /// <summary>The files of a repository the trainer needs (config, tokenizer, safetensors weights).</summary>
    public static IReadOnlyList<string> SelectFiles(IEnumerable<string> repoFiles) =>
        repoFiles.Where(f => !f.Contains('/') && (ExactFiles.Contains(f) || f == "config.json" || f.EndsWith(".safetensors", StringComparison.Ordinal)))
            .OrderBy(f => f == "config.json" ? 1 : 0) // config.json last: its presence marks a complete folder
            .ThenBy(f => f, StringComparer.Ordinal)
            .ToList();

    public async Task<IReadOnlyList<string>> ListFilesAsync(string modelId, CancellationToken ct = default)
    {
        var url = $"{Endpoint}/api/models/{modelId}/revision/main";
        using var response = await SendAsync(modelId, url, null, ct);
        await using var body = await response.Content.ReadAsStreamAsync(ct);
        try
        {
            using var doc = await JsonDocument.ParseAsync(body, cancellationToken: ct);
            if (!doc.RootElement.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new ModelDownloadException($"{url} returned no file list (\"siblings\") for {modelId}");
            return siblings.EnumerateArray()
                .Select(s => s.TryGetProperty("rfilename", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString()! : null)
                .OfType<string>()
                .ToList();
        }
        catch (JsonException e)
        {
            throw new ModelDownloadException($"{url} did not return JSON for {modelId}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Downloads the trainer's files of <paramref name="modelId"/> into <paramref name="targetDir"/>
    /// (created if needed); files already complete there are kept. Returns the folder.
    /// </summary>
    public async Task<string> DownloadAsync(string modelId, string targetDir, Action<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        var files = SelectFiles(await ListFilesAsync(modelId, ct));
        if (!files.Contains("config.json"))
            throw new ModelDownloadException($"{modelId} on {Endpoint} has no config.json; it is not a Hugging Face transformers model");
        if (!files.Any(f => f.EndsWith(".safetensors", StringComparison.Ordinal)))
            throw new ModelDownloadException($"{modelId} on {Endpoint} has no .safetensors weights; only safetensors checkpoints are supported");
        Directory.CreateDirectory(targetDir);
        foreach (var file in files)
            await DownloadFileAsync(modelId, file, Path.Combine(targetDir, file), progress, ct);
        return targetDir;
    }

    async Task DownloadFileAsync(string modelId, string file, string path, Action<DownloadProgress>? progress, CancellationToken ct)
    {
        if (File.Exists(path)) return; // renamed into place only when complete and verified
        var partial = path + ".incomplete";
        var offset = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        var url = $"{Endpoint}/{modelId}/resolve/main/{Uri.EscapeDataString(file)}";

        var (response, sha256, linkedSize) = await GetFollowingRedirectsAsync(modelId, url, offset, ct);
        using (response)
        {
            if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            {
                // The partial file is as long as (or longer than) the file: start again cleanly.
                File.Delete(partial);
                await DownloadFileAsync(modelId, file, path, progress, ct);
                return;
            }
            var resumed = response.StatusCode == HttpStatusCode.PartialContent;
            if (!resumed) offset = 0; // the server sent the whole file
            var total = linkedSize ?? response.Content.Headers.ContentRange?.Length
                        ?? (response.Content.Headers.ContentLength is { } len ? len + offset : null);

            await using (var output = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            await using (var input = await response.Content.ReadAsStreamAsync(ct))
            {
                var buffer = new byte[1 << 16];
                var done = offset;
                var nextReport = done;
                progress?.Invoke(new DownloadProgress(modelId, file, done, total));
                int read;
                while ((read = await input.ReadAsync(buffer, ct)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, read), ct);
                    done += read;
                    if (done >= nextReport + ProgressStepBytes)
                    {
                        nextReport = done;
                        progress?.Invoke(new DownloadProgress(modelId, file, done, total));
                    }
                }
                progress?.Invoke(new DownloadProgress(modelId, file, done, total));
                if (total is { } t && done != t)
                    throw new ModelDownloadException(
                        $"{file} of {modelId} from {Endpoint}: got {done} bytes, expected {t}; run again to resume");
            }
        }

        if (sha256 is not null)
        {
            string actual;
            await using (var check = File.OpenRead(partial))
                actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(check, ct));
            if (!string.Equals(actual, sha256, StringComparison.OrdinalIgnoreCase))
            {
                File.Delete(partial);
                throw new ModelDownloadException(
                    $"{file} of {modelId} from {Endpoint} is corrupt: sha256 {actual}, expected {sha256}; the partial file was deleted, run again to download it afresh");
            }
        }
        File.Move(partial, path, overwrite: true);
    }

    /// <summary>
    /// GET with `Range: bytes=offset-` when resuming; follows redirects itself so the Hub's headers
    /// (X-Linked-Etag, X-Linked-Size) on the first response are not lost, and so the token is not
    /// sent to another host.
    /// </summary>
    async Task<(HttpResponseMessage Response, string? Sha256, long? Size)> GetFollowingRedirectsAsync(
        string modelId, string url, long offset, CancellationToken ct)
    {
        string? sha256 = null;
        long? size = null;
        var current = new Uri(url);
        for (var hop = 0; ; hop++)
        {
            var response = await SendAsync(modelId, current.ToString(), offset > 0 ? offset : null, ct, allowRedirect: true,
                sendToken: current.Host == new Uri(Endpoint).Host);
            if (hop == 0)
            {
                sha256 = Sha256From(response, "X-Linked-Etag") ?? Sha256From(response, "ETag");
                if (response.Headers.TryGetValues("X-Linked-Size", out var sizes) && long.TryParse(sizes.FirstOrDefault(), out var s)) size = s;
            }
            if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } location)
            {
                response.Dispose();
                if (hop >= MaxRedirects) throw new ModelDownloadException($"too many redirects downloading {url}");
                current = location.IsAbsoluteUri ? location : new Uri(current, location);
                continue;
            }
            return (response, sha256, size);
        }
    }

    async Task<HttpResponseMessage> SendAsync(string modelId, string url, long? rangeFrom, CancellationToken ct,
        bool allowRedirect = false, bool sendToken = true)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (Token is not null && sendToken) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        if (rangeFrom is { } from) request.Headers.Range = new RangeHeaderValue(from, null);
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        }
        catch (HttpRequestException e)
        {
            throw new ModelDownloadException($"cannot reach the Hugging Face Hub at {Endpoint} to get {modelId}: {e.Message} (set HF_ENDPOINT for a mirror, or put the model in the models folder)", e);
        }
        var code = (int)response.StatusCode;
        if (response.IsSuccessStatusCode || (allowRedirect && code is >= 300 and < 400) || response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            return response;
        response.Dispose();
        throw response.StatusCode switch
        {
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => new ModelDownloadException(
                $"{Endpoint} refused access to {modelId} (HTTP {code}): " +
                (Token is null ? "set HF_TOKEN to a token that can read this model" : "the token in HF_TOKEN cannot read this model (gated? accept its licence on the Hub)")),
            HttpStatusCode.NotFound => new ModelDownloadException(
                $"{modelId} was not found on {Endpoint} (HTTP 404 for {url}); check the model id"),
            _ => new ModelDownloadException($"{Endpoint} answered HTTP {code} for {url} while getting {modelId}"),
        };
    }

    /// <summary>An ETag that is a 64-hex sha256 (LFS files); git blob ids (40 hex) are not checked.</summary>
    static string? Sha256From(HttpResponseMessage response, string header)
    {
        if (!response.Headers.TryGetValues(header, out var values)) return null;
        var v = values.FirstOrDefault()?.Trim();
        if (v is null) return null;
        if (v.StartsWith("W/", StringComparison.Ordinal)) v = v[2..];
        v = v.Trim('"');
        return Sha256Hex().IsMatch(v) ? v.ToLowerInvariant() : null;
    }

    [GeneratedRegex("^[0-9a-fA-F]{64}$")]
    private static partial Regex Sha256Hex();
}
