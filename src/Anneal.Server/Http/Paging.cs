// `limit` query parameter shared by list endpoints: 1..100, default 20.
using Anneal.Core.Contracts;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Http;

public static class Paging
{
    public const int DefaultLimit = 20;
    public const int MaxLimit = 100;

    public static bool TryLimit(string? raw, out int limit, out ProblemHttpResult problem, int max = MaxLimit, int @default = DefaultLimit)
    {
        problem = null!;
        limit = @default;
        if (string.IsNullOrEmpty(raw)) return true;
        if (int.TryParse(raw, out limit) && limit >= 1 && limit <= max) return true;
        problem = Problems.BadRequest($"limit must be an integer from 1 to {max}, got '{raw}'.",
            [new ErrorItem(null, "limit", $"expected an integer from 1 to {max}")]);
        return false;
    }
}
