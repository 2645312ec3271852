// Reading and updating `.env` files: KEY=VALUE lines, optional `export `, '#' comments, single or
// double quotes (double quotes understand \n, \" and \\). Writing keeps every other line as it was.
using System.Text;
using System.Text.RegularExpressions;

namespace Anneal.Cli.Env;

public sealed record DotEnvError(string File, int Line, string Message)
{
    public override string ToString() => $"{File}:{Line}: {Message}";
}

public static partial class DotEnv
{
    [GeneratedRegex(@"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$")]
    private static partial Regex Assignment();

    /// <summary>Parses a .env text; a line that is not KEY=VALUE is an error naming the line.</summary>
    public static (Dictionary<string, string> Values, List<DotEnvError> Errors) Parse(string text, string file)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var errors = new List<DotEnvError>();
        var lines = text.Replace("\r\n", "\n").Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimStart('\uFEFF');
            if (line.Trim().Length == 0 || line.TrimStart().StartsWith('#')) continue;
            var m = Assignment().Match(line);
            if (!m.Success)
            {
                errors.Add(new DotEnvError(file, i + 1, $"expected KEY=VALUE, got '{Truncate(line.Trim())}'"));
                continue;
            }
            var (value, error) = ParseValue(m.Groups[2].Value);
            if (error is not null) errors.Add(new DotEnvError(file, i + 1, $"{m.Groups[1].Value}: {error}"));
            else values[m.Groups[1].Value] = value;
        }
        return (values, errors);
    }

    static (string Value, string? Error) ParseValue(string raw)
    {
        raw = raw.Trim();
        if (raw.Length == 0) return ("", null);
        var quote = raw[0];
        if (quote is '"' or '\'')
        {
            var sb = new StringBuilder();
            for (var i = 1; i < raw.Length; i++)
            {
                var c = raw[i];
                if (c == quote)
                {
                    var rest = raw[(i + 1)..].Trim();
                    return rest.Length == 0 || rest.StartsWith('#') ? (sb.ToString(), null) : ("", $"unexpected text after the closing quote: '{Truncate(rest)}'");
                }
                if (quote == '"' && c == '\\' && i + 1 < raw.Length)
                {
                    var next = raw[++i];
                    sb.Append(next switch { 'n' => '\n', 't' => '\t', 'r' => '\r', _ => next });
                    continue;
                }
                sb.Append(c);
            }
            return ("", $"missing closing {quote}");
        }
        // Unquoted: a ' #' starts a comment.
        var hash = raw.IndexOf(" #", StringComparison.Ordinal);
        return ((hash >= 0 ? raw[..hash] : raw).Trim(), null);
    }

    static string Truncate(string s) => s.Length <= 60 ? s : s[..57] + "...";

    /// <summary>Renders a value so that <see cref="Parse"/> reads it back unchanged.</summary>
    public static string Quote(string value) =>
        value.Length > 0 && value.All(c => char.IsLetterOrDigit(c) || "-_./:@+,=".Contains(c))
            ? value
            : "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n") + "\"";

    /// <summary>
    /// Returns the text with each key set: an existing assignment line is replaced in place (its
    /// last occurrence, which is the one that counts), a new key is appended.
    /// </summary>
    public static string Set(string text, IReadOnlyList<KeyValuePair<string, string>> updates)
    {
        var lines = text.Length == 0 ? new List<string>() : text.Replace("\r\n", "\n").Split('\n').ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        foreach (var (key, value) in updates)
        {
            var rendered = $"{key}={Quote(value)}";
            var index = lines.FindLastIndex(l => Assignment().Match(l) is { Success: true } m && m.Groups[1].Value == key);
            if (index >= 0) lines[index] = rendered;
            else lines.Add(rendered);
        }
        return string.Join("\n", lines) + "\n";
    }
}
