// Typed, range-checked reads of one JSON object's fields. Each read adds an ErrorItem naming the
// full key path, the actual value and what is allowed, and returns null on a bad or absent value,
// so a parser collects every problem in one pass instead of stopping at the first.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Training;

internal sealed class JsonFields(JsonObject obj, string prefix, List<ErrorItem> errors)
{
    public string Path(string key) => prefix.Length == 0 ? key : $"{prefix}.{key}";

    void Error(string key, string message) => errors.Add(new ErrorItem(null, Path(key), message));

    public void RejectUnknown(IReadOnlyList<string> allowed)
    {
        foreach (var (key, _) in obj)
            if (!allowed.Contains(key))
                Error(key, $"unknown key{Suggest.DidYouMean(key, allowed)} (allowed: {string.Join(", ", allowed)})");
    }

    public int? Int(string key, long min, long max)
    {
        if (!TryGet(key, out var e)) return null;
        long value;
        if (e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var l)) value = l;
        else if (e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out var d) && d == Math.Floor(d) && Math.Abs(d) < 1e15) value = (long)d;
        else
        {
            Error(key, $"must be an integer between {min} and {max}, got {Describe(e)}");
            return null;
        }
        if (value < min || value > max)
        {
            Error(key, $"must be an integer between {min} and {max}, got {value}");
            return null;
        }
        return (int)value;
    }

    public double? Number(string key, double min, double max, bool minExclusive = false, bool maxExclusive = false)
    {
        if (!TryGet(key, out var e)) return null;
        var range = $"{(minExclusive ? ">" : "≥")} {Format(min)} and {(maxExclusive ? "<" : "≤")} {Format(max)}";
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out var value) || !double.IsFinite(value))
        {
            Error(key, $"must be a number {range}, got {Describe(e)}");
            return null;
        }
        var tooLow = minExclusive ? value <= min : value < min;
        var tooHigh = maxExclusive ? value >= max : value > max;
        if (tooLow || tooHigh)
        {
            Error(key, $"must be a number {range}, got {e.GetRawText()}");
            return null;
        }
        return value;
    }

    public bool? Bool(string key)
    {
        if (!TryGet(key, out var e)) return null;
        if (e.ValueKind is JsonValueKind.True or JsonValueKind.False) return e.GetBoolean();
        Error(key, $"must be true or false, got {Describe(e)}");
        return null;
    }

    public string? Choice(string key, IReadOnlyList<string> allowed)
    {
        if (!TryGet(key, out var e)) return null;
        var choices = string.Join(" | ", allowed.Select(a => $"\"{a}\""));
        if (e.ValueKind != JsonValueKind.String)
        {
            Error(key, $"must be one of {choices}, got {Describe(e)}");
            return null;
        }
        var s = e.GetString()!;
        if (allowed.Contains(s)) return s;
        Error(key, $"must be one of {choices}, got \"{s}\"{Suggest.DidYouMean(s, allowed)}");
        return null;
    }

    public string? String(string key, bool required = false)
    {
        if (!TryGet(key, out var e))
        {
            if (required) Error(key, "is required (a string)");
            return null;
        }
        if (e.ValueKind == JsonValueKind.String && e.GetString()!.Trim().Length > 0) return e.GetString();
        Error(key, $"must be a non-empty string, got {Describe(e)}");
        return null;
    }

    /// <summary>A nested object, or null when absent (an error when present but not an object).</summary>
    public JsonObject? Object(string key)
    {
        if (!obj.TryGetPropertyValue(key, out var node)) return null;
        if (node is JsonObject o) return o;
        Error(key, $"must be an object (a table), got {Describe(node)}");
        return null;
    }

    bool TryGet(string key, out JsonElement element)
    {
        element = default;
        if (!obj.TryGetPropertyValue(key, out var node)) return false;
        element = ToElement(node);
        return true;
    }

    /// <summary>A node as a JsonElement, whether it was parsed from text or built in code.</summary>
    public static JsonElement ToElement(JsonNode? node)
    {
        if (node is JsonValue v && v.TryGetValue<JsonElement>(out var e)) return e;
        using var doc = JsonDocument.Parse(node?.ToJsonString() ?? "null");
        return doc.RootElement.Clone();
    }

    public static string Describe(JsonNode? node) => Describe(ToElement(node));

    /// <summary>The value as the user wrote it, with its kind when that is the surprise.</summary>
    public static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{Truncate(e.GetString()!)}\"",
        JsonValueKind.Number => e.GetRawText(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        JsonValueKind.Null => "null",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        _ => e.ValueKind.ToString(),
    };

    static string Truncate(string s) => s.Length <= 60 ? s : s[..57] + "...";

    static string Format(double d) => d.ToString(CultureInfo.InvariantCulture);
}
