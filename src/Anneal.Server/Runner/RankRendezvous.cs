// The control plane as the meeting point of a job's ranks: rank 0 publishes a small value (NCCL's
// 128-byte unique id) and the other ranks wait for it, so no extra server has to run beside the
// job, and ranks on other hosts can meet the same way (SCALEOUT-QLORA.md §A3).
//   PUT /internal/jobs/{id}/rendezvous/{key}   body: the value (at most 4 KiB)      → 204
//   GET /internal/jobs/{id}/rendezvous/{key}?wait_s=30                             → 200 value, or 404 when not
//                                                                                    published within wait_s (≤ 60)
// Each multi-rank launch opens the job's rendezvous with a fresh random token (passed to the ranks in
// ANNEAL_RENDEZVOUS_TOKEN) and closes it when the launch ends; requests need `Authorization: Bearer
// <token>`. Values live in memory only: a value from an earlier launch is never seen.
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Runner;

public sealed class RankRendezvousStore
{
    public const int MaxValueBytes = 4096;
    public const int MaxWaitSeconds = 60;

    internal sealed class Launch(string token)
    {
        public string Token { get; } = token;
        public ConcurrentDictionary<string, TaskCompletionSource<byte[]>> Values { get; } = new(StringComparer.Ordinal);
        public TaskCompletionSource<byte[]> Slot(string key) => Values.GetOrAdd(key, _ => new(TaskCreationOptions.RunContinuationsAsynchronously));
    }

    readonly ConcurrentDictionary<string, Launch> launches = new(StringComparer.Ordinal);

    /// <summary>Opens (or re-opens, forgetting old values) the job's rendezvous; returns the token its ranks present.</summary>
    public string Open(string jobId)
    {
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();
        launches[jobId] = new Launch(token);
        return token;
    }

    public void Close(string jobId, string token)
    {
        if (launches.TryGetValue(jobId, out var l) && l.Token == token) launches.TryRemove(jobId, out _);
    }

    internal (Launch? Launch, bool Authorized) Find(string jobId, string? authorization)
    {
        if (!launches.TryGetValue(jobId, out var l)) return (null, false);
        var presented = authorization is { } a && a.StartsWith("Bearer ", StringComparison.Ordinal) ? a["Bearer ".Length..].Trim() : "";
        return (l, CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(presented), Encoding.UTF8.GetBytes(l.Token)));
    }

    internal static TaskCompletionSource<byte[]> Slot(Launch l, string key) => l.Slot(key);
}

public static class RankRendezvousApi
{
    public static void MapRankRendezvousApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/internal/jobs/{id}/rendezvous");
        group.MapPut("/{key}", Publish);
        group.MapGet("/{key}", Await);
    }

    static async Task<Results<NoContent, ProblemHttpResult>> Publish(string id, string key, HttpContext http, RankRendezvousStore store)
    {
        var (launch, authorized) = store.Find(id, http.Request.Headers.Authorization);
        if (Refused(id, launch, authorized) is { } refused) return refused;
        var buffer = new MemoryStream();
        var chunk = new byte[1024];
        int n;
        while ((n = await http.Request.Body.ReadAsync(chunk, http.RequestAborted)) > 0)
        {
            buffer.Write(chunk, 0, n);
            if (buffer.Length > RankRendezvousStore.MaxValueBytes)
                return TypedResults.Problem($"rendezvous value {key}: more than {RankRendezvousStore.MaxValueBytes} bytes", statusCode: 413);
        }
        var value = buffer.ToArray();
        var slot = RankRendezvousStore.Slot(launch!, key);
        if (!slot.TrySetResult(value) && !slot.Task.Result.AsSpan().SequenceEqual(value))
            return TypedResults.Problem($"rendezvous value {key} of job {id} was already published with different bytes", statusCode: 409);
        return TypedResults.NoContent();
    }

    static async Task<Results<FileContentHttpResult, ProblemHttpResult>> Await(string id, string key, HttpContext http, RankRendezvousStore store, string? wait_s)
    {
        var (launch, authorized) = store.Find(id, http.Request.Headers.Authorization);
        if (Refused(id, launch, authorized) is { } refused) return refused;
        var wait = 30;
        if (wait_s is not null && (!int.TryParse(wait_s, out wait) || wait < 0 || wait > RankRendezvousStore.MaxWaitSeconds))
            return TypedResults.Problem($"wait_s \"{wait_s}\": expected whole seconds from 0 to {RankRendezvousStore.MaxWaitSeconds}", statusCode: 400);
        var slot = RankRendezvousStore.Slot(launch!, key).Task;
        try { return TypedResults.File(await slot.WaitAsync(TimeSpan.FromSeconds(wait), http.RequestAborted), "application/octet-stream"); }
        catch (TimeoutException)
        {
            return TypedResults.Problem($"rendezvous value {key} of job {id} was not published within {wait} s; ask again", statusCode: 404);
        }
    }

    static ProblemHttpResult? Refused(string id, object? launch, bool authorized) =>
        launch is null ? TypedResults.Problem($"job {id} has no open rendezvous (it is not running as several ranks)", statusCode: 404)
        : !authorized ? TypedResults.Problem("a rendezvous needs the launch's token: Authorization: Bearer <ANNEAL_RENDEZVOUS_TOKEN>", statusCode: 401)
        : null;
}
