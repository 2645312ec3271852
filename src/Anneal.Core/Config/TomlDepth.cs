// Nesting limit for training configs. A config is a few tables deep; hostile or broken input can
// nest arrays, inline tables or dotted keys hundreds of levels, which the TOML parser and the JSON
// conversion recurse into (System.Text.Json stops at 64 with an exception, and a deep enough parse
// overflows the stack). Checked before parsing (brackets and braces, outside strings and comments)
// and after (tables made by dotted keys and headers), so the answer is a located error.
using Tomlyn.Model;

namespace Anneal.Core.Config;

public static class TomlDepth
{
    public const int MaxDepth = 32;

    /// <summary>The 1-based line where brackets/braces first nest deeper than <see cref="MaxDepth"/>, or null.</summary>
    public static int? TooDeepLine(string text)
    {
        int depth = 0, line = 1;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            switch (c)
            {
                case '\n': line++; break;
                case '#':
                    while (i + 1 < text.Length && text[i + 1] != '\n') i++;
                    break;
                case '"' or '\'':
                    var triple = i + 2 < text.Length && text[i + 1] == c && text[i + 2] == c;
                    var close = triple ? new string(c, 3) : c.ToString();
                    var j = i + close.Length;
                    while (j < text.Length && !(string.CompareOrdinal(text, j, close, 0, close.Length) == 0))
                    {
                        if (text[j] == '\\' && c == '"') j++;
                        else if (text[j] == '\n') { if (!triple) break; line++; }
                        j++;
                    }
                    i = Math.Min(text.Length, j + close.Length) - 1;
                    break;
                case '[' or '{':
                    if (++depth > MaxDepth) return line;
                    break;
                case ']' or '}':
                    depth = Math.Max(0, depth - 1);
                    break;
            }
        }
        return null;
    }

    /// <summary>The dotted path of the first value nested deeper than <see cref="MaxDepth"/>, or null.</summary>
    public static string? TooDeepKey(object? value, string path = "", int depth = 0)
    {
        if (depth > MaxDepth) return path.Length == 0 ? "(root)" : path;
        switch (value)
        {
            case TomlTable table:
                foreach (var (key, v) in table)
                    if (TooDeepKey(v, path.Length == 0 ? key : $"{path}.{key}", depth + 1) is { } found) return found;
                return null;
            case TomlTableArray tables:
                for (var i = 0; i < tables.Count; i++)
                    if (TooDeepKey(tables[i], $"{path}[{i}]", depth + 1) is { } found) return found;
                return null;
            case TomlArray array:
                for (var i = 0; i < array.Count; i++)
                    if (TooDeepKey(array[i], $"{path}[{i}]", depth + 1) is { } found) return found;
                return null;
            default:
                return null;
        }
    }
}
