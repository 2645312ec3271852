// Models: GET /api/models (the registry's base models), GET /api/learning/models[/{id}] (this
// org's fine-tuned models; /rl is empty: no RL here) and GET /api/learning/jobs/{id}/checkpoints
// (each id usable as a model).
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Models;

public static class ModelsApi
{
    public static IEndpointRouteBuilder MapModelsApi(this IEndpointRouteBuilder api)
    {
        api.MapGet("/models", () => TypedResults.Ok(new BaseModelList(ModelRegistry.All.Select(m => m.ToWire()).ToList())));
        api.MapGet("/learning/models", FineTuned);
        // RL models (Synth's `models list --type rl`): none here; SFT only.
        api.MapGet("/learning/models/rl", () => TypedResults.Ok(new FineTunedModelList([])));
        // Fine-tuned ids hold '/' and ':' (ft:Qwen/Qwen3-4B:job_…): a catch-all segment.
        api.MapGet("/learning/models/{**id}", FineTunedOne);
        api.MapGet("/learning/jobs/{id}/checkpoints", Checkpoints);
        return api;
    }

    static Ok<FineTunedModelList> FineTuned(HttpContext http, Db db)
    {
        using var conn = db.Connect();
        var models = Db.Query(conn, null, """
            SELECT id, base_model, job_id, created_at, status FROM fine_tuned_models WHERE org = @org ORDER BY rowid DESC
            """,
            r => new FineTunedModelObject(r.GetString(0), r.GetString(1), r.GetString(2), Db.ParseTime(r.GetString(3)), r.GetString(4)),
            ("@org", http.Org()));
        return TypedResults.Ok(new FineTunedModelList(models));
    }

    static Results<Ok<FineTunedModelObject>, ProblemHttpResult> FineTunedOne(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        var model = Db.Query(conn, null, "SELECT id, base_model, job_id, created_at, status FROM fine_tuned_models WHERE org = @org AND id = @id",
            r => new FineTunedModelObject(r.GetString(0), r.GetString(1), r.GetString(2), Db.ParseTime(r.GetString(3)), r.GetString(4)),
            ("@org", http.Org()), ("@id", id)).FirstOrDefault();
        return model is null ? Problems.NotFound("fine-tuned model", id) : TypedResults.Ok(model);
    }

    static Results<Ok<CheckpointList>, ProblemHttpResult> Checkpoints(string id, HttpContext http, Db db)
    {
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is null) return Problems.NotFound("job", id);
        var list = Db.Query(conn, null, "SELECT id, job_id, step, metrics, created_at FROM checkpoints WHERE job_id = @job ORDER BY step",
            r => new CheckpointObject(r.GetString(0), r.GetString(1), r.GetInt64(2),
                Db.Str(r, "metrics") is { } m ? JsonNode.Parse(m) as JsonObject : null, Db.ParseTime(r.GetString(4))),
            ("@job", id));
        return TypedResults.Ok(new CheckpointList(list));
    }
}
