// Deployments: POST /api/learning/deployments {model, device?} loads a model of the organisation
// into the inference process (starting it if needed) and reports `loading` → `ready` (or `failed`
// with the reason) and the endpoint to call: this server's /v1 with that model id. GET lists or
// shows them; DELETE stops one. Any model id also answers on /v1 without a deployment (loaded on
// first use); a deployment loads it ahead of the first request and tells when it is ready.
// Devices: one inference process per server, on the CPU or on the GPU of `anneal serve
// --inference-gpu N`; when N is also in --gpus, training and "gpu" deployments take turns on it
// through the scheduler (InferenceDevices), so a deployment never shares a device with a job.
using System.Data.Common;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Inference;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Deployments;

public static class DeploymentsApi
{
    public static IEndpointRouteBuilder MapDeploymentsApi(this IEndpointRouteBuilder api)
    {
        api.MapPost("/learning/deployments", Create);
        api.MapGet("/learning/deployments", List);
        api.MapGet("/learning/deployments/{id}", Get);
        api.MapDelete("/learning/deployments/{id}", Stop);
        return api;
    }

    static string Endpoint(HttpContext http) => $"{http.Request.Scheme}://{http.Request.Host}/v1";

    static async Task<Results<Created<DeploymentObject>, Ok<DeploymentObject>, ProblemHttpResult>> Create(
        CreateDeploymentRequest? body, HttpContext http, Db db, ServerOptions options, InferenceSupervisor supervisor, InferenceDevices devices,
        IHostApplicationLifetime lifetime)
    {
        if (body?.Model is not { Length: > 0 } model)
            return Problems.Validation("model is required", [new ErrorItem(null, "model", "expected a model id: a base model or a fine_tuned_model of your organisation")]);
        var device = body.Device ?? devices.DefaultDevice;
        if (device is not ("cpu" or "gpu"))
            return Problems.Validation($"device \"{device}\" is not allowed", [new ErrorItem(null, "device", "expected \"cpu\" or \"gpu\"")]);
        var org = http.Org();
        var (served, error) = await ServedModels.ResolveAsync(db, options, org, model, http.RequestAborted);
        if (served is null) return Problems.NotFound("model", model + (error is null ? "" : $" ({error})"));

        using (await devices.LockAsync(http.RequestAborted))
        using (var conn = db.Connect())
        {
            var existing = Find(conn, org, null, model);
            if (existing is not null && existing.Device == device) return TypedResults.Ok(existing with { Endpoint = Endpoint(http) });
            if (await devices.AcquireAsync(conn, device) is { } refused)
                return refused.Status == 409
                    ? Problems.Make(409, ErrorCodes.DeviceBusy, "Device busy", refused.Detail, [new ErrorItem(null, "device", refused.Reason)])
                    : Problems.Validation(refused.Detail, [new ErrorItem(null, "device", refused.Reason)]);
            var now = Db.Now();
            var id = Ids.New("dep");
            Db.Exec(conn, null, """
                INSERT INTO deployments (id, org, model, status, device, model_dir, adapter_dir, created_at, updated_at)
                VALUES (@id, @org, @model, @status, @device, @dir, @adapter, @t, @t)
                """, ("@id", id), ("@org", org), ("@model", model), ("@status", DeploymentStatus.Loading), ("@device", device),
                ("@dir", served.ModelDir), ("@adapter", served.AdapterDir), ("@t", now));
            _ = Task.Run(() => LoadAsync(db, supervisor, devices, served, id, lifetime.ApplicationStopping), CancellationToken.None);
            var created = Find(conn, org, id, null)!;
            return TypedResults.Created($"/api/learning/deployments/{id}", created with { Endpoint = Endpoint(http) });
        }
    }

    /// <summary>One answer of one token loads the weights (and adapter) into the inference process.</summary>
    static async Task LoadAsync(Db db, InferenceSupervisor supervisor, InferenceDevices devices, ServedModel served, string id, CancellationToken ct)
    {
        string? error = null;
        try
        {
            var endpoint = await supervisor.EnsureRunningAsync(ct);
            var body = Encoding.UTF8.GetBytes(new JsonObject { ["model"] = served.Id, ["prompt"] = "Hello", ["max_tokens"] = 1, ["temperature"] = 0 }.ToJsonString());
            using var request = V1Api.UpstreamRequest(endpoint, "/v1/completions", body, served);
            using var response = await V1Api.SendUpstreamAsync(request, ct);
            if (!response.IsSuccessStatusCode)
            {
                var text = await response.Content.ReadAsStringAsync(ct);
                error = (JsonNode.Parse(text)?["error"]?["message"]?.GetValue<string>()) ?? text;
            }
        }
        catch (Exception e) when (e is InferenceUnavailableException or HttpRequestException or System.Text.Json.JsonException)
        {
            error = e.Message;
        }
        catch (OperationCanceledException) { return; }
        using (await devices.LockAsync(CancellationToken.None))
        using (var conn = db.Connect())
        {
            Db.Exec(conn, null, "UPDATE deployments SET status = @s, error = @e, updated_at = @t WHERE id = @id AND status = @loading",
                ("@s", error is null ? DeploymentStatus.Ready : DeploymentStatus.Failed), ("@e", error), ("@t", Db.Now()), ("@id", id), ("@loading", DeploymentStatus.Loading));
            // A failed "gpu" deployment holds the GPU no longer.
            if (error is not null) await devices.ReleaseUnusedAsync(conn);
        }
    }

    static Ok<DeploymentList> List(HttpContext http, Db db, string? status)
    {
        using var conn = db.Connect();
        var list = Db.Query(conn, null, "SELECT * FROM deployments WHERE org = @org AND (@status IS NULL OR status = @status) ORDER BY rowid DESC",
            r => Read(r, Endpoint(http)), ("@org", http.Org()), ("@status", status));
        return TypedResults.Ok(new DeploymentList(list));
    }

    static Results<Ok<DeploymentObject>, ProblemHttpResult> Get(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        return Find(conn, http.Org(), id, null) is { } d ? TypedResults.Ok(d with { Endpoint = Endpoint(http) }) : Problems.NotFound("deployment", id);
    }

    /// <summary>Stops a deployment; the last "gpu" one hands a shared GPU back to training (once the inference process has left it).</summary>
    static async Task<Results<Ok<DeploymentObject>, ProblemHttpResult>> Stop(string id, HttpContext http, Db db, InferenceDevices devices)
    {
        using (await devices.LockAsync(http.RequestAborted))
        using (var conn = db.Connect())
        {
            if (Find(conn, http.Org(), id, null) is null) return Problems.NotFound("deployment", id);
            Db.Exec(conn, null, "UPDATE deployments SET status = @s, updated_at = @t WHERE id = @id", ("@s", DeploymentStatus.Stopped), ("@t", Db.Now()), ("@id", id));
            await devices.ReleaseUnusedAsync(conn);
            return TypedResults.Ok(Find(conn, http.Org(), id, null)! with { Endpoint = Endpoint(http) });
        }
    }

    /// <summary>By id, or the active (loading/ready) deployment of a model.</summary>
    static DeploymentObject? Find(DbConnection conn, string org, string? id, string? model) =>
        Db.Query(conn, null, id is not null
                ? "SELECT * FROM deployments WHERE org = @org AND id = @id"
                : "SELECT * FROM deployments WHERE org = @org AND model = @model AND status IN ('loading', 'ready') ORDER BY rowid DESC LIMIT 1",
            r => Read(r, ""), ("@org", org), ("@id", id), ("@model", model)).FirstOrDefault();

    static DeploymentObject Read(DbDataReader r, string endpoint) => new(
        Db.Str(r, "id")!, "deployment", Db.Str(r, "model")!, Db.Str(r, "status")!, Db.Str(r, "device")!, endpoint,
        Db.Str(r, "error") is { } e ? new ErrorItem(null, "model", e) : null,
        Db.ParseTime(Db.Str(r, "created_at")!), Db.ParseTime(Db.Str(r, "updated_at")!), Db.Str(r, "model_dir"), Db.Str(r, "adapter_dir"));
}
