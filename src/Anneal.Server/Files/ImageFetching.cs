// https images of an uploaded dataset, fetched once while the upload is validated and stored
// content-addressed beside it (Core's StoredImages), so training never depends on the network and
// a re-run trains on the same bytes. The fetch is an SSRF surface, so:
//   - every connection goes to an address checked after DNS resolution: loopback, private
//     (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10), link-local (169.254/16 incl. the cloud
//     metadata address, fe80::/10), unspecified, multicast and broadcast are refused; redirects are
//     followed by hand (https only, at most 5) and each new connection is checked the same way;
//   - size, time and decoded pixel count are limited, and the bytes must decode as PNG/JPEG/WebP/GIF;
//   - each failure is a `Line N: messages[i].content[j]: …` error and nothing is stored unless every
//     image was fetched (the folder appears whole, by rename).
// TestHosts names hosts exempt from the address check whose certificates are not verified: only
// for tests that serve images from a loopback server.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Vision;

namespace Anneal.Server.Files;

public sealed record ImageFetchSettings
{
    public long MaxBytes { get; init; } = 20L * 1024 * 1024;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(20);
    public long MaxPixels { get; init; } = ImageDecoder.DefaultMaxPixels;
    public int MaxRedirects { get; init; } = 5;
    /// <summary>Host names allowed on any address, certificates unchecked. For tests only.</summary>
    public IReadOnlySet<string> TestHosts { get; init; } = new HashSet<string>();
}

public static class ImageFetching
{
    /// <summary>Why an address may not be fetched from, or null when it may.</summary>
    public static string? Refused(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address)) return "a loopback address";
        if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)) return "an unspecified address";
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            if (b[0] == 10 || (b[0] == 172 && b[1] >= 16 && b[1] <= 31) || (b[0] == 192 && b[1] == 168) || (b[0] == 100 && b[1] >= 64 && b[1] <= 127))
                return "a private address";
            if (b[0] == 169 && b[1] == 254) return "a link-local (metadata) address";
            if (b[0] == 0 || b[0] >= 224) return "a reserved, multicast or broadcast address";
            return null;
        }
        if (address.IsIPv6LinkLocal || address.IsIPv6SiteLocal) return "a link-local address";
        if (address.IsIPv6Multicast) return "a multicast address";
        if ((address.GetAddressBytes()[0] & 0xFE) == 0xFC) return "a private address";
        return null;
    }

    sealed class RefusedAddressException(string message) : Exception(message);

    static HttpClient Client(ImageFetchSettings s)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseProxy = false,
            ConnectTimeout = s.Timeout,
            ConnectCallback = async (context, ct) =>
            {
                var host = context.DnsEndPoint.Host;
                var addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, ct);
                if (addresses.Length == 0) throw new RefusedAddressException($"{host} does not resolve");
                if (!s.TestHosts.Contains(host))
                    foreach (var a in addresses)
                        if (Refused(a) is { } why) throw new RefusedAddressException($"{host} resolves to {a}, {why}; images must come from public addresses");
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    // Connect to the addresses just checked, never to a second resolution.
                    await socket.ConnectAsync(addresses, context.DnsEndPoint.Port, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch { socket.Dispose(); throw; }
            },
        };
        if (s.TestHosts.Count > 0)
            handler.SslOptions.RemoteCertificateValidationCallback = (sender, cert, chain, errors) =>
                errors == System.Net.Security.SslPolicyErrors.None || (sender is System.Net.Security.SslStream ssl && s.TestHosts.Contains(ssl.TargetHostName));
        return new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>Fetches one URL within the limits: its bytes, or the reason it cannot be used.</summary>
    static async Task<(byte[]? Bytes, string? Problem)> FetchOne(HttpClient client, string url, ImageFetchSettings s, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(s.Timeout);
        var uri = new Uri(url);
        try
        {
            for (var hop = 0; ; hop++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, uri);
                request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("image/*"));
                using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
                if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } location)
                {
                    if (hop >= s.MaxRedirects) return (null, $"{url}: more than {s.MaxRedirects} redirects");
                    uri = new Uri(uri, location);
                    if (uri.Scheme != Uri.UriSchemeHttps) return (null, $"{url}: redirected to {uri.Scheme}:// (only https is fetched)");
                    continue;
                }
                if (!response.IsSuccessStatusCode)
                    return (null, $"{url}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}");
                if (response.Content.Headers.ContentLength is > 0 and var length && length > s.MaxBytes)
                    return (null, $"{url}: {length:N0} bytes, more than the {s.MaxBytes:N0} allowed");
                await using var body = await response.Content.ReadAsStreamAsync(timeout.Token);
                using var buffer = new MemoryStream();
                var chunk = new byte[81920];
                int read;
                while ((read = await body.ReadAsync(chunk, timeout.Token)) > 0)
                {
                    buffer.Write(chunk, 0, read);
                    if (buffer.Length > s.MaxBytes) return (null, $"{url}: more than the {s.MaxBytes:N0} bytes allowed");
                }
                var bytes = buffer.ToArray();
                if (ImageDecoder.TryDecode(bytes, out var problem, s.MaxPixels) is null) return (null, $"{url}: {problem}");
                return (bytes, null);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return (null, $"{url}: no complete answer within {s.Timeout.TotalSeconds:0.#} s");
        }
        catch (HttpRequestException e) when (e.InnerException is RefusedAddressException r)
        {
            return (null, $"{url}: refused: {r.Message}");
        }
        catch (HttpRequestException e)
        {
            return (null, $"{url}: {e.Message}");
        }
    }

    /// <summary>
    /// Fetches every https image the dataset refers to and stores them beside it. Returns the errors
    /// (then nothing is stored) and their total; no https images: nothing to do.
    /// </summary>
    public static async Task<(List<ErrorItem> Errors, int Total)> FetchAndStoreAsync(string datasetPath, ImageFetchSettings s, int maxShown, CancellationToken ct)
    {
        var wanted = new List<(int Line, string Field, string Url)>();
        foreach (var (line, record) in DatasetRecords.Read(datasetPath))
            foreach (var (field, url) in ImageReferences.Of(record))
                if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
                    wanted.Add((line, field, url));
        if (wanted.Count == 0) return ([], 0);

        using var client = Client(s);
        var fetched = new Dictionary<string, byte[]>();
        var problems = new Dictionary<string, string>();
        foreach (var url in wanted.Select(w => w.Url).Distinct())
        {
            var (bytes, problem) = await FetchOne(client, url, s, ct);
            if (bytes is not null) fetched[url] = bytes;
            else problems[url] = problem!;
        }
        var errors = wanted.Where(w => problems.ContainsKey(w.Url)).Select(w => new ErrorItem(w.Line, w.Field, problems[w.Url])).ToList();
        if (errors.Count > 0) return (errors.Take(maxShown).ToList(), errors.Count);
        StoredImages.Write(datasetPath, fetched);
        return ([], 0);
    }
}
