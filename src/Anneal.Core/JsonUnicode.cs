// JSON may spell characters as \uXXXX escapes, and a lone UTF-16 surrogate ("\ud800") is valid JSON
// syntax but no character: System.Text.Json throws InvalidOperationException as soon as such a
// string is read, deep inside whatever code reads it. Inputs are checked once, up front, so the
// caller can name the field ("messages[0].content", "suffix") instead of failing later.
using System.Text.Json;

namespace Anneal.Core;

public static class JsonUnicode
{
    /// <summary>What to tell the user about such a string.</summary>
    public const string Problem = "invalid Unicode: holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not a character";

    /// <summary>
    /// The path of the first string or key that is not valid Unicode (e.g. "messages[1].content"),
    /// "" for the root itself, or null when every string is valid.
    /// </summary>
    public static string? FirstInvalid(JsonElement element, string path = "")
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                try { element.GetString(); return null; }
                catch (InvalidOperationException) { return path; }
            case JsonValueKind.Array:
                var i = 0;
                foreach (var item in element.EnumerateArray())
                    if (FirstInvalid(item, $"{path}[{i++}]") is { } found) return found;
                return null;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    string name;
                    try { name = property.Name; }
                    catch (InvalidOperationException) { return path.Length == 0 ? "(a key)" : $"{path} (a key)"; }
                    if (FirstInvalid(property.Value, path.Length == 0 ? name : $"{path}.{name}") is { } found) return found;
                }
                return null;
            default:
                return null;
        }
    }
}
