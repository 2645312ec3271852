// Keys resource for an organisation's admin key: list, create and revoke the organisation's keys.
// A key that is not an admin key gets 403; another organisation's key id is 404 like any other
// resource. Revocation is immediate (ApiKeys.Require reads the table on every request).
using Anneal.Core.Contracts;
using Anneal.Server.Http;
using Anneal.Server.Storage;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Auth;

public static class KeysApi
{
    public sealed record KeyList(IReadOnlyList<ApiKeyInfo> Data);

    public static IEndpointRouteBuilder MapKeysApi(this IEndpointRouteBuilder api)
    {
        var keys = api.MapGroup("/keys").AddEndpointFilter(RequireAdmin);
        keys.MapGet("/", (HttpContext http, Db db) => TypedResults.Ok(new KeyList(ApiKeys.List(db, http.Org()))));
        keys.MapPost("/", Create);
        keys.MapDelete("/{id}", Revoke);
        return api;
    }

    static async ValueTask<object?> RequireAdmin(EndpointFilterInvocationContext ctx, EndpointFilterDelegate next) =>
        ctx.HttpContext.Key().Admin
            ? await next(ctx)
            : Problems.Make(403, "forbidden", "Not an admin key",
                "Only an organisation's admin key manages its keys; create one on the server's machine with `anneal keys create --org NAME`.");

    /// <summary>Body (optional): {"admin": bool}; default a key that uses the API but does not manage keys.</summary>
    static async Task<Results<Created<CreatedApiKey>, ProblemHttpResult>> Create(HttpContext http, Db db, CancellationToken ct)
    {
        var org = http.Org();
        var admin = false;
        using var reader = new StreamReader(http.Request.Body);
        var text = await reader.ReadToEndAsync(ct);
        if (text.Trim().Length > 0)
        {
            System.Text.Json.Nodes.JsonNode? body;
            try { body = System.Text.Json.Nodes.JsonNode.Parse(text); }
            catch (System.Text.Json.JsonException e)
            {
                return Problems.BadRequest($"Malformed JSON body: {e.Message.Split(" Path:")[0]}");
            }
            if (body is not System.Text.Json.Nodes.JsonObject fields)
                return Problems.BadRequest("The request body must be a JSON object like {\"admin\": false}.");
            foreach (var (name, value) in fields)
            {
                if (name != "admin")
                    return Problems.BadRequest($"Unknown field '{name}'; allowed fields: admin.", [new ErrorItem(null, name, "unknown field")]);
                if (value?.GetValueKind() is not (System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False))
                    return Problems.BadRequest("Field 'admin' must be true or false.", [new ErrorItem(null, "admin", "expected true or false")]);
                admin = value.GetValue<bool>();
            }
        }
        var (id, key) = ApiKeys.CreateWithId(db, org, admin);
        return TypedResults.Created($"/api/keys/{id}", new CreatedApiKey(id, "api_key", org, admin, key));
    }

    static Results<Ok<DeletedObject>, ProblemHttpResult> Revoke(string id, HttpContext http, Db db) =>
        ApiKeys.Revoke(db, id, http.Org()) ? TypedResults.Ok(new DeletedObject(id, "api_key", true)) : Problems.NotFound("api key", id);
}
