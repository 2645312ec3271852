// Wire shapes of deployments (POST/GET/DELETE /api/learning/deployments): a model of the
// organisation loaded into the inference process and answering on the server's /v1.
namespace Anneal.Core.Contracts;

public static class DeploymentStatus
{
    public const string Loading = "loading", Ready = "ready", Failed = "failed", Stopped = "stopped";
}

/// <param name="Device">"cpu" or "gpu"; default: the device this server gives its inference process.</param>
public sealed record CreateDeploymentRequest(string? Model, string? Device = null);

/// <param name="Endpoint">the OpenAI base URL to use with `model`, e.g. http://127.0.0.1:8000/v1.</param>
public sealed record DeploymentObject(
    string Id, string Object, string Model, string Status, string Device, string Endpoint,
    ErrorItem? Error, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

public sealed record DeploymentList(IReadOnlyList<DeploymentObject> Data);
