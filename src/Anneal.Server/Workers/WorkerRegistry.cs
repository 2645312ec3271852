// The worker hosts a server knows, and whether a job's [compute] can ever run anywhere.
// A worker registers its slots (POST /api/workers/register: name, GPU type, GPUs per slot, slot
// count; `anneal worker` sends as GPUs per slot the most GPUs one job may take there: all of them
// where mpirun can launch the ranks, else 1) when it starts; each claim and heartbeat renews its last_seen (by the database clock, as
// leases are), and a claim from a name never registered records what that claim offers (one slot).
// Job creation asks Refusal(): a [compute] request that neither this server's own runner nor a
// worker seen within ServerOptions.WorkerWindow (24 h by default) can meet is refused with 422
// compute_unavailable naming the request and every offer; one that can run somewhere but not now
// waits, with sft.placement.waiting events as before (Placement).
// What counts as this server's own runner: it launches trainers (TrainerCommand, MaxConcurrentJobs
// > 0). On the CPU it runs any request as one process (with the warning RankPlacement names), so
// such a server accepts everything, as it always did; with --gpus it meets gpu_count up to their
// number, of any type (the server's GPUs have no declared type).
using System.Data.Common;
using System.Globalization;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Workers;

/// <summary>A worker host as registered: <see cref="Slots"/> jobs at once, each on <see cref="GpusPerSlot"/> GPUs of <see cref="GpuType"/> (0: the CPU).</summary>
public sealed record WorkerInfo(string Name, string? GpuType, int GpusPerSlot, int Slots, DateTimeOffset RegisteredAt, DateTimeOffset LastSeen, bool Recent)
{
    /// <summary>"1 × A100 (host-a, 2 slots)", "CPU (host-b, 1 slot)".</summary>
    public string Offer => (GpusPerSlot == 0 ? "CPU" : $"{GpusPerSlot} × {GpuType ?? "GPU of no declared type"}") + $" ({Name}, {Slots} slot{(Slots == 1 ? "" : "s")})";
}

public sealed record WorkerList(IReadOnlyList<WorkerInfo> Data);

/// <summary>Body of POST /api/workers/register.</summary>
public sealed record WorkerRegistration(string Worker, string? GpuType, int GpusPerSlot, int Slots);

public static class WorkerRegistry
{
    const int MaxName = 200, MaxGpuType = 64, MaxGpusPerSlot = 1024, MaxSlots = 4096;

    static readonly Dictionary<string, string> Fields = new()
    {
        ["worker"] = "a non-empty string (the worker's name)", ["gpu_type"] = "a string or null (e.g. \"H100\")",
        ["gpus_per_slot"] = $"an integer from 0 (CPU) to {MaxGpusPerSlot}", ["slots"] = $"an integer from 1 to {MaxSlots}",
    };

    /// <summary>The registration in <paramref name="body"/>, or a 400 naming the field and what it expects.</summary>
    public static (WorkerRegistration? Registration, ProblemHttpResult? Problem) Parse(JsonNode? body)
    {
        static ProblemHttpResult Bad(string field, string message) =>
            Problems.BadRequest($"Field '{field}' {message}.", [new ErrorItem(null, field, message)]);
        if (body is not JsonObject o)
            return (null, Problems.BadRequest("The request body must be a JSON object like {\"worker\": \"gpu-host-1\", \"gpu_type\": \"H100\", \"gpus_per_slot\": 1, \"slots\": 2}."));
        foreach (var (name, _) in o)
            if (!Fields.ContainsKey(name))
                return (null, Problems.BadRequest($"Unknown field '{name}'; allowed fields: {string.Join(", ", Fields.Keys)}.", [new ErrorItem(null, name, "unknown field")]));
        foreach (var required in new[] { "worker", "gpus_per_slot", "slots" })
            if (o[required] is null) return (null, Bad(required, $"is required: expected {Fields[required]}"));
        if (o["worker"] is not JsonValue w || !w.TryGetValue<string>(out var worker) || worker.Trim().Length == 0)
            return (null, Bad("worker", $"must be {Fields["worker"]}"));
        if (worker.Trim().Length > MaxName) return (null, Bad("worker", $"is {worker.Trim().Length} characters long; at most {MaxName} allowed"));
        string? gpuType = null;
        if (o["gpu_type"] is { } t)
        {
            if (t is not JsonValue tv || !tv.TryGetValue(out gpuType)) return (null, Bad("gpu_type", $"must be {Fields["gpu_type"]}"));
            gpuType = gpuType.Trim().Length == 0 ? null : gpuType.Trim();
            if (gpuType is { Length: > MaxGpuType }) return (null, Bad("gpu_type", $"is {gpuType.Length} characters long; at most {MaxGpuType} allowed"));
        }
        static int? Int(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;
        if (Int(o["gpus_per_slot"]) is not { } gpus || gpus is < 0 or > MaxGpusPerSlot)
            return (null, Bad("gpus_per_slot", $"is {o["gpus_per_slot"]!.ToJsonString()}; expected {Fields["gpus_per_slot"]}"));
        if (Int(o["slots"]) is not { } slots || slots is < 1 or > MaxSlots)
            return (null, Bad("slots", $"is {o["slots"]!.ToJsonString()}; expected {Fields["slots"]}"));
        return (new WorkerRegistration(worker.Trim(), gpus == 0 ? null : gpuType, gpus, slots), null);
    }

    /// <summary>Records (or replaces) a worker's slots and marks it seen now.</summary>
    public static void Register(Db db, WorkerRegistration r)
    {
        using var conn = db.Connect();
        Db.Exec(conn, null, $"""
            INSERT INTO workers (name, gpu_type, gpus_per_slot, slots, registered_at, last_seen_ms)
            VALUES (@name, @type, @gpus, @slots, @t, {SqlDialect.Of(conn).NowMs})
            ON CONFLICT (name) DO UPDATE SET gpu_type = excluded.gpu_type, gpus_per_slot = excluded.gpus_per_slot,
                slots = excluded.slots, registered_at = excluded.registered_at, last_seen_ms = excluded.last_seen_ms
            """, ("@name", r.Worker), ("@type", r.GpuType), ("@gpus", (long)r.GpusPerSlot), ("@slots", (long)r.Slots), ("@t", Db.Now()));
    }

    /// <summary>
    /// Marks the worker seen now (a claim or heartbeat). One never registered (a worker that claims
    /// without registering) is recorded with what its claim offers: one slot of <paramref name="gpus"/> GPUs.
    /// </summary>
    public static void Seen(DbConnection conn, DbTransaction? tx, string worker, string? gpuType, int gpus)
    {
        Db.Exec(conn, tx, $"""
            INSERT INTO workers (name, gpu_type, gpus_per_slot, slots, registered_at, last_seen_ms)
            VALUES (@name, @type, @gpus, 1, @t, {SqlDialect.Of(conn).NowMs})
            ON CONFLICT (name) DO UPDATE SET last_seen_ms = excluded.last_seen_ms
            """, ("@name", worker), ("@type", gpus == 0 ? null : gpuType), ("@gpus", (long)gpus), ("@t", Db.Now()));
    }

    /// <summary>Marks the worker that holds lease <paramref name="owner"/> (worker:NAME:xxxxxxxx) seen now; other owners are left alone.</summary>
    public static void SeenByLease(DbConnection conn, string owner)
    {
        if (!owner.StartsWith("worker:", StringComparison.Ordinal) || owner.LastIndexOf(':') is var end && end <= "worker:".Length) return;
        Db.Exec(conn, null, $"UPDATE workers SET last_seen_ms = {SqlDialect.Of(conn).NowMs} WHERE name = @name",
            ("@name", owner["worker:".Length..end]));
    }

    /// <summary>Every registered worker, most recently seen first; Recent: seen within <paramref name="window"/>.</summary>
    public static List<WorkerInfo> List(DbConnection conn, TimeSpan window)
    {
        var now = Db.Scalar<long>(conn, null, $"SELECT {SqlDialect.Of(conn).NowMs}");
        return Db.Query(conn, null, "SELECT name, gpu_type, gpus_per_slot, slots, registered_at, last_seen_ms FROM workers ORDER BY last_seen_ms DESC, name",
            r =>
            {
                var seen = r.GetInt64(5);
                return new WorkerInfo(r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), (int)r.GetInt64(2), (int)r.GetInt64(3),
                    Db.ParseTime(r.GetString(4)), DateTimeOffset.FromUnixTimeMilliseconds(seen), now - seen <= (long)window.TotalMilliseconds);
            });
    }

    /// <summary>
    /// Why no runner can ever meet <paramref name="request"/> (the 422 to answer), or null when this
    /// server's runner or a recently seen worker can, or when no capacity is known at all.
    /// </summary>
    /// <remarks>
    /// No capacity known (this server runs no trainer and no worker was seen within the window):
    /// the job is accepted and waits. Workers usually come after the server is set up (or come back
    /// after a weekend), and refusing then would turn "start the workers" into "submit again"; the
    /// job says what it waits for instead (<see cref="NoCapacityYet"/>).
    /// </remarks>
    public static ProblemHttpResult? Refusal(DbConnection conn, ServerOptions options, ComputeRequest? request)
    {
        if (request is null) return null;
        var own = OwnGpus(options);
        if (own == 0) return null;   // a CPU runner runs any request (RankPlacement warns)
        if (own is { } gpus && request.GpuCount <= gpus) return null;
        var workers = options.WorkerToken is null ? [] : List(conn, options.WorkerWindow).Where(w => w.Recent).ToList();
        if (own is null && workers.Count == 0) return null;
        if (workers.Any(w => Placement.Check(request, w.GpuType, w.GpusPerSlot).Fits)) return null;

        var offers = new List<string>();
        if (own is { } n) offers.Add($"this server trains on {n} GPU{(n == 1 ? "" : "s")} (--gpus {string.Join(',', options.Gpus)})");
        offers.Add(workers.Count == 0
            ? $"no worker was seen in the last {Hours(options.WorkerWindow)}"
            : $"workers seen in the last {Hours(options.WorkerWindow)} offer: {string.Join(", ", workers.Select(w => w.Offer))}");
        var message = $"requested {request}; {string.Join("; ", offers)}";
        return Problems.Make(422, ErrorCodes.ComputeUnavailable, "Compute unavailable",
            $"metadata.effective_config.compute: {message}. No runner can ever start this job: ask for what exists, or register a worker that has it (anneal worker --gpus … --gpu-type …).",
            [new ErrorItem(null, "metadata.effective_config.compute", message)],
            new Dictionary<string, object?>
            {
                ["requested"] = new JsonObject { ["gpu_type"] = request.GpuType, ["gpu_count"] = request.GpuCount },
                ["offers"] = workers.Select(w => w.Offer).ToList(),
            });
    }

    /// <summary>
    /// The line for a job accepted while no capacity is known (a server that runs no trainer itself
    /// and has seen no worker within the window), or null when something can run jobs.
    /// </summary>
    public static string? NoCapacityYet(DbConnection conn, ServerOptions options)
    {
        if (OwnGpus(options) is not null || options.WorkerToken is null) return null;
        if (List(conn, options.WorkerWindow).Any(w => w.Recent)) return null;
        return $"No worker has registered in the last {Hours(options.WorkerWindow)} and this server runs no trainer itself; the job waits for a worker (anneal worker --server … --gpus …).";
    }

    /// <summary>This server's own runner: the GPUs a job can have here (0: the CPU), or null when it runs no trainer.</summary>
    static int? OwnGpus(ServerOptions options) =>
        options.TrainerCommand.Count > 0 && options.MaxConcurrentJobs > 0 ? options.Gpus.Count : null;

    static string Hours(TimeSpan window) =>
        window.TotalHours >= 1 ? $"{window.TotalHours.ToString("0.##", CultureInfo.InvariantCulture)} h" : $"{window.TotalSeconds.ToString("0.##", CultureInfo.InvariantCulture)} s";
}
