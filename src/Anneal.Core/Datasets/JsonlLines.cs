// Reads a JSONL stream one line at a time (never the whole file): splits on '\n', drops a trailing
// '\r', drops a UTF-8 BOM at the start, and numbers lines from 1 as an editor does. Blank lines are
// returned too (IsBlank) so callers keep their numbering.
namespace Anneal.Core.Datasets;

public readonly record struct JsonlLine(int Number, byte[] Bytes)
{
    public bool IsBlank => Bytes.All(b => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n');
}

public static class JsonlLines
{
    /// <summary>A line longer than this is reported instead of being buffered (base64 images stay well below).</summary>
    public const int MaxLineBytes = 64 * 1024 * 1024;

    /// <summary>System.Text.Json messages end in "LineNumber: 0 | BytePositionInLine: 5."; callers give their own position.</summary>
    public static string ShortJsonMessage(System.Text.Json.JsonException e)
    {
        var m = e.Message;
        var cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut >= 0 ? m[..cut] : m).TrimEnd('.', ' ');
    }

    static ReadOnlySpan<byte> Bom => [0xEF, 0xBB, 0xBF];

    /// <summary>
    /// Lines of <paramref name="stream"/>. A line over <see cref="MaxLineBytes"/> throws
    /// <see cref="LineTooLongException"/> (after which the stream position is undefined).
    /// </summary>
    public static IEnumerable<JsonlLine> Read(Stream stream)
    {
        var buffer = new byte[64 * 1024];
        var line = new MemoryStream();
        var number = 1;
        int read;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            var start = 0;
            while (start < read)
            {
                var nl = Array.IndexOf(buffer, (byte)'\n', start, read - start);
                var end = nl < 0 ? read : nl;
                if (line.Length + (end - start) > MaxLineBytes) throw new LineTooLongException(number);
                line.Write(buffer, start, end - start);
                if (nl < 0) break;
                yield return new JsonlLine(number, TakeLine(line, number));
                number++;
                start = nl + 1;
            }
        }
        if (line.Length > 0) yield return new JsonlLine(number, TakeLine(line, number));
    }

    static byte[] TakeLine(MemoryStream line, int number)
    {
        var bytes = line.ToArray();
        line.SetLength(0);
        if (number == 1 && bytes.AsSpan().StartsWith(Bom)) bytes = bytes[3..];
        return bytes.Length > 0 && bytes[^1] == (byte)'\r' ? bytes[..^1] : bytes;
    }
}

public sealed class LineTooLongException(int line)
    : IOException($"Line {line}: longer than {JsonlLines.MaxLineBytes / (1024 * 1024)} MiB; one example per line is expected")
{
    public int Line { get; } = line;
}
