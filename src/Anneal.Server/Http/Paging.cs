// `limit` query parameter shared by list endpoints: 1..100, default 20; and a byte budget per page,
// so a page of large objects (job metadata up to its limit) stays a few megabytes.
using Anneal.Core.Contracts;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Anneal.Server.Http;

public static class Paging
{
    public const int DefaultLimit = 20;
    public const int MaxLimit = 100;

    /// <summary>Serialized bytes after which a page ends early (has_more then says so).</summary>
    public const int MaxPageBytes = 4 * 1024 * 1024;

    /// <summary>The items, in order, until their sizes pass <see cref="MaxPageBytes"/>; at least one.</summary>
    public static List<T> TakeWithinBytes<T>(IEnumerable<T> items, Func<T, int> size, int maxBytes = MaxPageBytes)
    {
        var page = new List<T>();
        long total = 0;
        foreach (var item in items)
        {
            total += size(item);
            if (page.Count > 0 && total > maxBytes) break;
            page.Add(item);
        }
        return page;
    }

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
