// GET /api/learning/jobs/{id}/metrics?after_step=&name= → {points:[{name, value, step, created_at}]}.
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Jobs;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;
using System.Data.Common;

namespace Anneal.Server.Metrics;

public static class MetricsApi
{
    public static IEndpointRouteBuilder MapMetricsApi(this IEndpointRouteBuilder api)
    {
        api.MapGet("/learning/jobs/{id}/metrics", Get);
        return api;
    }

    static Results<Ok<MetricList>, ProblemHttpResult> Get(string id, HttpContext http, Db db, string? after_step, string? name)
    {
        long? after = null;
        if (!string.IsNullOrEmpty(after_step))
        {
            if (!long.TryParse(after_step, out var a))
                return Problems.BadRequest($"after_step must be an integer, got '{after_step}'.", [new ErrorItem(null, "after_step", "expected an integer")]);
            after = a;
        }
        using var conn = db.Connect();
        if (JobRows.Find(conn, null, http.Org(), id) is null) return Problems.NotFound("job", id);
        var points = Db.Query(conn, null, """
            SELECT name, value, step, created_at FROM metrics
            WHERE job_id = @job AND (@after IS NULL OR step > @after) AND (@name IS NULL OR name = @name)
            ORDER BY step, rowid
            """,
            r => new MetricPoint(r.GetString(0), r.GetDouble(1), r.GetInt64(2), Db.ParseTime(r.GetString(3))),
            ("@job", id), ("@after", after), ("@name", string.IsNullOrEmpty(name) ? null : name));
        return TypedResults.Ok(new MetricList(points));
    }

    public static void Record(DbConnection conn, DbTransaction? tx, string jobId, string name, long step, double value) =>
        Db.Exec(conn, tx, "INSERT INTO metrics (job_id, name, step, value, created_at) VALUES (@j, @n, @s, @v, @t)",
            ("@j", jobId), ("@n", name), ("@s", step), ("@v", value), ("@t", Db.Now()));
}
