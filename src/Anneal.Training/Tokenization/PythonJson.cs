// JSON text exactly as Python's json.dumps(x, ensure_ascii=False) writes it, which is what the `tojson`
// filter of Hugging Face chat templates produces: ", " between items, ": " after keys, keys in their
// original order, non-ASCII characters written as they are, control characters as \n, \t, … or \u00XX.
// Numbers: integers keep their digits; other numbers are Python floats (1.0 → "1.0", 1e-05 → "1e-05").
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Training.Tokenization;

public static class PythonJson
{
    public static string Dumps(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(node, sb);
        return sb.ToString();
    }

    static void Write(JsonNode? node, StringBuilder sb)
    {
        switch (node)
        {
            case null:
                sb.Append("null");
                break;
            case JsonObject obj:
                sb.Append('{');
                bool first = true;
                foreach (var (key, value) in obj)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    WriteString(key, sb);
                    sb.Append(": ");
                    Write(value, sb);
                }
                sb.Append('}');
                break;
            case JsonArray arr:
                sb.Append('[');
                for (int i = 0; i < arr.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    Write(arr[i], sb);
                }
                sb.Append(']');
                break;
            default:
                var value2 = node.AsValue();
                switch (value2.GetValueKind())
                {
                    case JsonValueKind.String: WriteString(value2.GetValue<string>(), sb); break;
                    case JsonValueKind.True: sb.Append("true"); break;
                    case JsonValueKind.False: sb.Append("false"); break;
                    case JsonValueKind.Null: sb.Append("null"); break;
                    case JsonValueKind.Number: sb.Append(Number(value2.ToJsonString())); break;
                    default: throw new ArgumentException($"cannot write JSON value of kind {value2.GetValueKind()}");
                }
                break;
        }
    }

    public static void WriteString(string s, StringBuilder sb)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>A JSON number literal as Python prints the value it parses to (int or float repr).</summary>
    public static string Number(string literal)
    {
        if (literal.IndexOfAny(['.', 'e', 'E']) < 0)
            return literal.StartsWith("-0", StringComparison.Ordinal) && literal.TrimStart('-').TrimStart('0') == "" ? "0" : literal;
        double x = double.Parse(literal, NumberStyles.Float, CultureInfo.InvariantCulture);
        return FloatRepr(x);
    }

    /// <summary>Python's repr(float): shortest round-trip digits, fixed notation for 1e-4 ≤ |x| &lt; 1e16.</summary>
    public static string FloatRepr(double x)
    {
        if (double.IsNaN(x)) return "NaN";
        if (double.IsInfinity(x)) return x > 0 ? "Infinity" : "-Infinity";
        if (x == 0) return double.IsNegative(x) ? "-0.0" : "0.0";

        // "R" gives the shortest round-trip digits, e.g. "1.2345E-05" or "123.45"; pull out digits and exponent.
        string r = Math.Abs(x).ToString("R", CultureInfo.InvariantCulture);
        int exp = 0;
        int e = r.IndexOf('E');
        if (e >= 0) { exp = int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture); r = r[..e]; }
        int dot = r.IndexOf('.');
        string digits = dot < 0 ? r : r[..dot] + r[(dot + 1)..];
        int decpt = (dot < 0 ? r.Length : dot) + exp; // value = 0.DIGITS × 10^decpt
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') lead++;
        digits = digits[lead..].TrimEnd('0');
        decpt -= lead;
        if (digits.Length == 0) digits = "0";

        var sb = new StringBuilder();
        if (x < 0) sb.Append('-');
        if (decpt > -4 && decpt <= 16)
        {
            if (decpt <= 0) sb.Append("0.").Append('0', -decpt).Append(digits);
            else if (decpt >= digits.Length) sb.Append(digits).Append('0', decpt - digits.Length).Append(".0");
            else sb.Append(digits[..decpt]).Append('.').Append(digits[decpt..]);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits[1..]);
            int e10 = decpt - 1;
            sb.Append('e').Append(e10 < 0 ? '-' : '+').Append(Math.Abs(e10).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
