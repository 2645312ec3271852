// Validates a JSONL chat dataset in one pass over its UTF-8 bytes as they arrive, in chunks of any
// size: a file being read, or an upload being received (the server hashes, writes and checks each
// chunk once). Lines are found in place in one pooled buffer (1 MiB, grown only for a longer line,
// at most JsonlLines.MaxLineBytes), so memory does not depend on the file's size, and no line
// becomes an array or a string. Line rules as JsonlLines: split on '\n', one trailing '\r' and a
// UTF-8 BOM on line 1 dropped, blank lines skipped but counted for numbering.
//
// Each non-blank line is first checked for valid UTF-8, then proved valid by RecordScan (a
// Utf8JsonReader pass, no allocation); a line the scan cannot prove valid (an error, or a shape it
// leaves alone such as image parts) goes to DatasetValidator's document-based rules, which report
// the same line-numbered errors as ever and note whether the record carries images.
using System.Buffers;
using System.Text.Unicode;
using Anneal.Core.Contracts;

namespace Anneal.Core.Datasets;

public sealed class DatasetCheck : IDisposable
{
    const int InitialBuffer = 1 << 20;

    readonly DatasetValidationOptions _options;
    readonly DatasetValidator.ErrorSink _sink;
    readonly RecordScan _scan = new();
    byte[] _buffer = ArrayPool<byte>.Shared.Rent(InitialBuffer);
    int _start;   // first byte of the line being assembled
    int _scanned; // bytes before this are known to hold no '\n' of that line
    int _end;     // end of the bytes received
    int _line = 1;
    int _examples;
    int _withImages;
    bool _pooled = true;
    bool _stopped; // a line over the limit: the rest of the input is not read (as JsonlLines throws)

    public DatasetCheck(DatasetValidationOptions? options = null)
    {
        _options = options ?? new DatasetValidationOptions();
        _sink = new DatasetValidator.ErrorSink(_options.MaxErrorsShown);
    }

    /// <summary>Bytes given so far.</summary>
    public long Bytes { get; private set; }

    /// <summary>Checks the next bytes of the dataset (any chunking: a line may span many calls).</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        Bytes += data.Length;
        while (!data.IsEmpty && !_stopped)
        {
            var space = FreeSpace();
            var n = Math.Min(space.Length, data.Length);
            data[..n].CopyTo(space);
            data = data[n..];
            _end += n;
            ProcessLines();
        }
    }

    /// <summary>Reads <paramref name="stream"/> to its end straight into the line buffer.</summary>
    public void ReadFrom(Stream stream)
    {
        while (!_stopped)
        {
            var n = stream.Read(FreeSpace());
            if (n == 0) return;
            Bytes += n;
            _end += n;
            ProcessLines();
        }
    }

    /// <summary>The verdict once every byte was given. The check cannot be used afterwards.</summary>
    public DatasetReport Complete()
    {
        if (!_stopped && _end > _start) Line(_buffer.AsMemory(_start, _end - _start));
        _stopped = true;
        _start = _end = _scanned = 0;
        if (_examples == 0 && _sink.Total == 0)
            _sink.Add(new ErrorItem(null, null, DatasetValidator.NoExamples));
        return new DatasetReport(_examples, _sink.Shown, _sink.Total, _withImages);
    }

    public void Dispose()
    {
        ReturnBuffer();
        _buffer = [];
        _stopped = true;
    }

    void ReturnBuffer()
    {
        if (_pooled) ArrayPool<byte>.Shared.Return(_buffer);
        _pooled = false;
    }

    /// <summary>Room after the received bytes: the partial line moves to the front, or the buffer grows for a long line.</summary>
    Span<byte> FreeSpace()
    {
        if (_end < _buffer.Length) return _buffer.AsSpan(_end);
        var pending = _end - _start;
        if (_start > 0)
        {
            _buffer.AsSpan(_start, pending).CopyTo(_buffer);
        }
        else
        {
            // Never more than one byte past the limit: that byte already proves the line too long.
            // Not from the pool, which would round 64 MiB up to 128 and keep it.
            var grown = GC.AllocateUninitializedArray<byte>((int)Math.Min(2L * _buffer.Length, JsonlLines.MaxLineBytes + 1L));
            _buffer.AsSpan(0, pending).CopyTo(grown);
            ReturnBuffer();
            _buffer = grown;
        }
        _scanned -= _start;
        _start = 0;
        _end = pending;
        return _buffer.AsSpan(_end);
    }

    void ProcessLines()
    {
        while (!_stopped)
        {
            var nl = _buffer.AsSpan(_scanned, _end - _scanned).IndexOf((byte)'\n');
            if (nl < 0)
            {
                _scanned = _end;
                if (_end - _start > JsonlLines.MaxLineBytes) TooLong();
                return;
            }
            var lineEnd = _scanned + nl;
            if (lineEnd - _start > JsonlLines.MaxLineBytes)
            {
                TooLong();
                return;
            }
            Line(_buffer.AsMemory(_start, lineEnd - _start));
            _start = _scanned = lineEnd + 1;
        }
    }

    void TooLong()
    {
        _sink.Add(new ErrorItem(_line, null, $"longer than {JsonlLines.MaxLineBytes / (1024 * 1024)} MiB; one example per line is expected"));
        _stopped = true;
    }

    void Line(ReadOnlyMemory<byte> memory)
    {
        var number = _line++;
        var bytes = memory.Span;
        if (number == 1 && bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) memory = memory[3..];
        if (memory.Length > 0 && memory.Span[^1] == (byte)'\r') memory = memory[..^1];
        bytes = memory.Span;
        if (bytes.IndexOfAnyExcept(" \t\r"u8) < 0) return; // blank ('\n' cannot occur inside a line)
        _examples++;
        if (Utf8.IsValid(bytes) && _scan.IsValid(bytes)) return;
        if (DatasetValidator.CheckLine(number, memory, _options, _sink)) _withImages++;
    }
}
