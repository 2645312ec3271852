// How the ranks of one launch exchange NCCL's 128-byte unique id: rank 0 creates it (it embeds rank
// 0's bootstrap address) and publishes it; the others wait for it. Two ways, chosen by the launch:
//   HttpRendezvous  through the control plane that launched the job (ANNEAL_RENDEZVOUS_URL and
//                   _TOKEN; Anneal.Server's RankRendezvous.cs): no extra server, and ranks on
//                   other hosts can meet the same way;
//   FileRendezvous  through the job folder the ranks of one host share, named by the launch's run
//                   id (ANNEAL_RUN_ID) so a stale id of an earlier attempt is never read, written
//                   aside and renamed so a reader sees all of it or nothing.
using System.Net;
using System.Net.Http.Headers;
using Anneal.Core.Training;

namespace Anneal.Training.Distributed;

public interface IRendezvous
{
    void Publish(byte[] value);
    /// <summary>The published value, once it has <paramref name="length"/> bytes; throws TimeoutException after the launch's timeout.</summary>
    byte[] Await(int length);
}

public static class Rendezvous
{
    /// <summary>The control plane's rendezvous when the launch names one, else the job folder's.</summary>
    public static IRendezvous ForLaunch(string jobFolder, string fallbackRunId, TimeSpan timeout) =>
        Environment.GetEnvironmentVariable(RankLaunch.RendezvousUrlVariable) is { Length: > 0 } url
            ? new HttpRendezvous(url, Environment.GetEnvironmentVariable(RankLaunch.RendezvousTokenVariable) ?? "", "nccl-id", timeout)
            : new FileRendezvous(Path.Combine(jobFolder, "rendezvous"), Environment.GetEnvironmentVariable(RankLaunch.RunIdVariable) ?? fallbackRunId, timeout);
}

public sealed class FileRendezvous(string folder, string runId, TimeSpan timeout) : IRendezvous
{
    string PathOfId => Path.Combine(folder, $"nccl-id-{runId}");

    public void Publish(byte[] value)
    {
        Directory.CreateDirectory(folder);
        var tmp = PathOfId + ".tmp";
        File.WriteAllBytes(tmp, value);
        File.Move(tmp, PathOfId, overwrite: true);
    }

    public byte[] Await(int length)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(PathOfId))
            {
                var bytes = File.ReadAllBytes(PathOfId);
                if (bytes.Length == length) return bytes;
            }
            Thread.Sleep(50);
        }
        throw new TimeoutException($"rank 0 did not publish the NCCL unique id within {timeout.TotalSeconds:F0} s ({PathOfId})");
    }
}

/// <summary>PUT/GET …/internal/jobs/{id}/rendezvous/{key} with the launch's bearer token; GET long-polls.</summary>
public sealed class HttpRendezvous(string baseUrl, string token, string key, TimeSpan timeout) : IRendezvous
{
    static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(90) };
    string Url => $"{baseUrl.TrimEnd('/')}/{Uri.EscapeDataString(key)}";

    HttpRequestMessage Request(HttpMethod method, string url) =>
        new(method, url) { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", token) } };

    public void Publish(byte[] value)
    {
        using var request = Request(HttpMethod.Put, Url);
        request.Content = new ByteArrayContent(value);
        using var response = Http.Send(request);
        if (!response.IsSuccessStatusCode)
            throw new InvalidOperationException($"rendezvous {Url}: publishing answered {(int)response.StatusCode}: {Body(response)}");
    }

    public byte[] Await(int length)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var wait = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalSeconds, 0, 30);
            using var request = Request(HttpMethod.Get, $"{Url}?wait_s={wait}");
            using var response = Http.Send(request);
            if (response.IsSuccessStatusCode)
            {
                var bytes = response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult();
                if (bytes.Length != length)
                    throw new InvalidOperationException($"rendezvous {Url}: got {bytes.Length} bytes, expected {length}");
                return bytes;
            }
            if (response.StatusCode != HttpStatusCode.NotFound || DateTime.UtcNow >= deadline)
                throw response.StatusCode == HttpStatusCode.NotFound
                    ? new TimeoutException($"rank 0 did not publish the NCCL unique id within {timeout.TotalSeconds:F0} s ({Url})")
                    : new InvalidOperationException($"rendezvous {Url} answered {(int)response.StatusCode}: {Body(response)}");
        }
    }

    static string Body(HttpResponseMessage r) => r.Content.ReadAsStringAsync().GetAwaiter().GetResult();
}
