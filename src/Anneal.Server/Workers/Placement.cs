// Placement of jobs on workers by the TOML's [compute] section (metadata.effective_config.compute
// = {gpu_type?, gpu_count?}): a worker asking for a job offers its GPU type (`anneal worker
// --gpu-type`) and the GPUs free on it at that moment (a CPU slot none, or CPU ranks). A job that
// names a GPU type runs only on GPUs of that type (case-insensitive), one that asks for more GPUs
// than are free there, or for several hosts (nodes > 1, refused at job creation since), waits; a
// job without [compute] runs anywhere. A job passed over gets one sft.placement.waiting event saying why.
using System.Text.Json.Nodes;

namespace Anneal.Server.Workers;

public sealed record ComputeRequest(string? GpuType, int GpuCount, int Nodes = 1)
{
    public static ComputeRequest? Of(string? metadataJson)
    {
        if (metadataJson is null) return null;
        JsonNode? meta;
        try { meta = JsonNode.Parse(metadataJson); }
        catch (System.Text.Json.JsonException) { return null; }
        if (meta?["effective_config"]?["compute"] is not JsonObject compute || compute.Count == 0) return null;
        var type = compute["gpu_type"] is JsonValue t && t.TryGetValue<string>(out var s) && s.Trim().Length > 0 ? s.Trim() : null;
        var count = compute["gpu_count"] is JsonValue c && c.TryGetValue<int>(out var n) ? n
            : compute["gpu_count"] is JsonValue cs && cs.TryGetValue<string>(out var ns) && int.TryParse(ns, out var parsed) ? parsed : 1;
        return new ComputeRequest(type, Math.Max(count, 0), Math.Max(Anneal.Core.Training.JobSettings.Nodes(compute) ?? 1, 1));
    }

    public override string ToString() => $"{GpuCount} × {GpuType ?? "GPU"}";
}

public static class Placement
{
    public const string WaitingEvent = "sft.placement.waiting";

    /// <summary>Whether a slot with <paramref name="gpus"/> GPUs of <paramref name="gpuType"/> can run the job; why not, otherwise.</summary>
    public static (bool Fits, string? Why) Check(ComputeRequest? request, string? gpuType, int gpus, bool cpuRanks = false)
    {
        if (request is null) return (true, null);
        if (gpus == 0 && cpuRanks && request.GpuType is null && request.Nodes <= 1) return (true, null);   // gpu_count CPU ranks
        if (request.Nodes > 1)
            return (false, $"requested {request} on {request.Nodes} nodes; several hosts per job are not supported yet (a worker slot is one host)");
        if (request.GpuType is { } wanted && !string.Equals(wanted, gpuType, StringComparison.OrdinalIgnoreCase))
            return (false, $"requested {request}; this worker offers {(gpuType is null ? "GPUs of no declared type" : gpuType)}");
        if (request.GpuCount > gpus)
            return (false, $"requested {request}; this worker has {gpus} free");
        return (true, null);
    }
}
