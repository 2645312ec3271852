// The token cache: a dataset rendered with the chat template, tokenized and fitted to
// sequence_length once (on all cores), stored as one binary file and read back through a memory
// map, so re-runs, resumed jobs and other jobs on the same data and tokenizer start at once and the
// trainer's memory does not grow with the dataset (only 4 bytes of length per example stay in memory).
//
// File layout (little-endian), written to a temporary name and renamed, so a reader sees a whole
// file or none:
//   header, 128 bytes
//     0  magic "ANNTOKEN"          8  version u32     12  header size u32 (128)
//     16 key (32 bytes: TokenCacheKey.Hash, what the file was built from)
//     48 examples i32  52 records i32  56 truncated i32  60 dropped i32  64 longest i32  68 keep-all length i32
//     72 tokens i64    80 trained tokens i64    88 file tokens i64 (all records, before truncation)
//     96 index offset i64   104 checksum of bytes [128, end) u64   112 checksum of bytes [0, 112) u64   120 zero
//   examples, from byte 128: token ids i32[length], trained flags u8[length], zero-padded to 8 bytes
//   index: offsets i64[examples], lengths i32[examples], line numbers i32[examples]
// A file whose magic, version, key, length or checksums do not match is never read: it is rebuilt.
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Anneal.Training.Data;

/// <summary>
/// What a cache file is built from: the dataset's bytes, the tokenizer's files, the chat template
/// (with the build of the code that renders, tokenizes and fits) and sequence_length.
/// </summary>
public sealed record TokenCacheKey(string DatasetSha256, string TokenizerSha256, string Template, int SequenceLength)
{
    /// <summary>How SftData.Fit treats long examples; part of the key so a new rule never reads an old file.</summary>
    public const string TruncationRule = "keep the first sequence_length tokens; token 0 untrained; drop examples without trained tokens";

    public byte[] Hash() => SHA256.HashData(Encoding.UTF8.GetBytes(
        $"anneal token cache {TokenCache.Version}\ndataset {DatasetSha256}\ntokenizer {TokenizerSha256}\ntemplate {Template}\n" +
        $"sequence_length {SequenceLength}\ntruncation {TruncationRule}\n"));

    /// <summary>The cache file's name: the key's hash, so each key has its own file.</summary>
    public string FileName => Convert.ToHexStringLower(Hash())[..32] + ".tokens";

    /// <summary>SHA-256 of a file's bytes, hex.</summary>
    public static string HashFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>SHA-256 over the tokenizer files of a model folder that exist (name and bytes of each).</summary>
    public static string HashTokenizer(string modelDir)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "vocab.json", "merges.txt" })
        {
            var path = Path.Combine(modelDir, name);
            if (!File.Exists(path)) continue;
            sha.AppendData(Encoding.UTF8.GetBytes(name + "\n"));
            sha.AppendData(File.ReadAllBytes(path));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

public static class TokenCache
{
    public const int Version = 1;
    public const int HeaderBytes = 128;
    static ReadOnlySpan<byte> Magic => "ANNTOKEN"u8;

    /// <summary>Writes a cache file atomically: examples in order, then the index and the header.</summary>
    public sealed class Writer : IDisposable
    {
        readonly string path, temp;
        readonly byte[] key;
        readonly FileStream stream;
        readonly StreamChecksum checksum = new();
        readonly List<long> offsets = [];
        readonly List<int> lengths = [], lines = [];
        long position = HeaderBytes;
        bool done;

        public Writer(string path, byte[] key)
        {
            (this.path, this.key) = (path, key);
            temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial";
            stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            stream.Write(new byte[HeaderBytes]);
        }

        public void Add(SftExample e)
        {
            offsets.Add(position);
            lengths.Add(e.Length);
            lines.Add(e.Line);
            Write(MemoryMarshal.AsBytes(e.Ids.AsSpan()));
            Write(MemoryMarshal.AsBytes(e.Trained.AsSpan()));   // bool is one byte, 0 or 1
            Write(new byte[(8 - (int)(position % 8)) % 8]);
        }

        void Write(ReadOnlySpan<byte> bytes)
        {
            stream.Write(bytes);
            checksum.Append(bytes);
            position += bytes.Length;
        }

        /// <summary>Finishes the file under its final name (replacing any file there).</summary>
        public void Complete(DataStats stats)
        {
            var indexOffset = position;
            Write(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(offsets)));
            Write(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(lengths)));
            Write(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(lines)));
            var header = new byte[HeaderBytes];
            var h = header.AsSpan();
            Magic.CopyTo(h);
            BinaryPrimitives.WriteUInt32LittleEndian(h[8..], Version);
            BinaryPrimitives.WriteUInt32LittleEndian(h[12..], HeaderBytes);
            key.CopyTo(h[16..48]);
            int[] counts = [stats.Examples, stats.TotalExamples, stats.Truncated, stats.DroppedNoTrainedTokens, stats.LongestTokens, stats.MinLengthToKeepAll];
            for (var i = 0; i < counts.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(h[(48 + 4 * i)..], counts[i]);
            BinaryPrimitives.WriteInt64LittleEndian(h[72..], stats.Tokens);
            BinaryPrimitives.WriteInt64LittleEndian(h[80..], stats.TrainedTokens);
            BinaryPrimitives.WriteInt64LittleEndian(h[88..], stats.FileTokens);
            BinaryPrimitives.WriteInt64LittleEndian(h[96..], indexOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(h[104..], checksum.Finish());
            BinaryPrimitives.WriteUInt64LittleEndian(h[112..], StreamChecksum.Of(h[..112]));
            stream.Position = 0;
            stream.Write(header);
            stream.Flush(flushToDisk: true);
            stream.Dispose();
            File.Move(temp, path, overwrite: true);
            done = true;
        }

        public void Dispose()
        {
            stream.Dispose();
            if (!done) try { File.Delete(temp); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Opens a cache file built for <paramref name="key"/>, or null with the reason it cannot be used
    /// (absent, truncated, another key or format, checksum mismatch). Checks every byte.
    /// </summary>
    public static TokenCacheFile? TryOpen(string path, byte[] key, out string whyNot)
    {
        whyNot = "";
        if (!File.Exists(path)) { whyNot = "no cache file yet"; return null; }
        var header = new byte[HeaderBytes];
        long fileLength;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan))
        {
            fileLength = stream.Length;
            if (fileLength < HeaderBytes) { whyNot = $"{fileLength} bytes, shorter than its {HeaderBytes}-byte header (truncated)"; return null; }
            stream.ReadExactly(header);
            var h = header.AsSpan();
            if (!h[..8].SequenceEqual(Magic)) { whyNot = "not a token cache file (wrong magic)"; return null; }
            if (BinaryPrimitives.ReadUInt32LittleEndian(h[8..]) is var v && v != Version) { whyNot = $"format version {v}, this trainer writes {Version}"; return null; }
            if (StreamChecksum.Of(h[..112]) != BinaryPrimitives.ReadUInt64LittleEndian(h[112..])) { whyNot = "header checksum mismatch (corrupt)"; return null; }
            if (!h[16..48].SequenceEqual(key)) { whyNot = "built from other inputs (key mismatch)"; return null; }
            var examples = BinaryPrimitives.ReadInt32LittleEndian(h[48..]);
            var indexOffset = BinaryPrimitives.ReadInt64LittleEndian(h[96..]);
            var expected = indexOffset + 16L * examples;
            if (examples < 0 || indexOffset < HeaderBytes || expected != fileLength)
            {
                whyNot = $"{fileLength} bytes where the header promises {expected} (truncated or corrupt)";
                return null;
            }
            var sum = new StreamChecksum();
            var buffer = new byte[1 << 20];
            int read;
            while ((read = stream.Read(buffer)) > 0) sum.Append(buffer.AsSpan(0, read));
            if (sum.Finish() != BinaryPrimitives.ReadUInt64LittleEndian(h[104..])) { whyNot = "checksum mismatch (corrupt)"; return null; }
        }
        return new TokenCacheFile(path, header, fileLength);
    }
}

/// <summary>
/// A cache file's examples, read through a memory map: the indexer copies one example's ids and
/// flags out of the map; only the lengths (for step plans) are held in memory.
/// </summary>
public sealed class TokenCacheFile : IReadOnlyList<SftExample>, IDisposable
{
    readonly MemoryMappedFile map;
    readonly MemoryMappedViewAccessor view;
    readonly long indexOffset;
    readonly int[] lengths;

    public string Path { get; }
    public DataStats Stats { get; }
    /// <summary>Token count of each example (after truncation), in file order.</summary>
    public IReadOnlyList<int> Lengths => lengths;
    public int Count => lengths.Length;

    internal TokenCacheFile(string path, byte[] header, long fileLength)
    {
        Path = path;
        int I(int at) => BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(at));
        long L(int at) => BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(at));
        Stats = new DataStats(I(48), L(72), L(80), I(56), I(60), I(52), I(64), I(68)) { FileTokens = L(88) };
        indexOffset = L(96);
        map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
        lengths = new int[Stats.Examples];
        if (lengths.Length > 0) view.ReadArray(indexOffset + 8L * lengths.Length, lengths, 0, lengths.Length);
    }

    public SftExample this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            var n = lengths[index];
            var offset = view.ReadInt64(indexOffset + 8L * index);
            var line = view.ReadInt32(indexOffset + 12L * Count + 4L * index);
            var ids = new int[n];
            var flags = new byte[n];
            view.ReadArray(offset, ids, 0, n);
            view.ReadArray(offset + 4L * n, flags, 0, n);
            var trained = new bool[n];
            for (var t = 0; t < n; t++) trained[t] = flags[t] != 0;
            return new SftExample(line, ids, trained);
        }
    }

    public IEnumerator<SftExample> GetEnumerator()
    {
        for (var i = 0; i < Count; i++) yield return this[i];
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    public void Dispose()
    {
        view.Dispose();
        map.Dispose();
    }
}

/// <summary>
/// A fast 64-bit checksum for detecting damaged cache files (not an authenticity check): four
/// independent multiply-rotate lanes over 8-byte words, so it runs at memory speed.
/// </summary>
public sealed class StreamChecksum
{
    const ulong P1 = 11400714785074694791UL, P2 = 14029467366897019727UL, P3 = 1609587929392839161UL;
    readonly ulong[] lanes = [unchecked(P1 + P2), P2, 0, unchecked(0 - P1)];
    readonly byte[] pending = new byte[32];
    int pendingCount;
    long total;

    static ulong Round(ulong lane, ulong word) => ulong.RotateLeft(lane + word * P2, 31) * P1;

    public void Append(ReadOnlySpan<byte> bytes)
    {
        total += bytes.Length;
        if (pendingCount > 0)
        {
            var take = Math.Min(32 - pendingCount, bytes.Length);
            bytes[..take].CopyTo(pending.AsSpan(pendingCount));
            pendingCount += take;
            bytes = bytes[take..];
            if (pendingCount < 32) return;
            Stripe(pending);
            pendingCount = 0;
        }
        var whole = bytes.Length / 32 * 32;
        var words = MemoryMarshal.Cast<byte, ulong>(bytes[..whole]);
        ulong a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
        for (var i = 0; i < words.Length; i += 4)
        {
            a = Round(a, words[i]); b = Round(b, words[i + 1]); c = Round(c, words[i + 2]); d = Round(d, words[i + 3]);
        }
        (lanes[0], lanes[1], lanes[2], lanes[3]) = (a, b, c, d);
        bytes[whole..].CopyTo(pending);
        pendingCount = bytes.Length - whole;
    }

    void Stripe(ReadOnlySpan<byte> stripe)
    {
        var w = MemoryMarshal.Cast<byte, ulong>(stripe);
        for (var i = 0; i < 4; i++) lanes[i] = Round(lanes[i], w[i]);
    }

    public ulong Finish()
    {
        var h = ulong.RotateLeft(lanes[0], 1) + ulong.RotateLeft(lanes[1], 7) + ulong.RotateLeft(lanes[2], 12) + ulong.RotateLeft(lanes[3], 18);
        h ^= (ulong)total * P3;
        foreach (var b in pending.AsSpan(0, pendingCount)) h = ulong.RotateLeft(h ^ (b * P3), 11) * P1;
        h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
        return h;
    }

    public static ulong Of(ReadOnlySpan<byte> bytes)
    {
        var c = new StreamChecksum();
        c.Append(bytes);
        return c.Finish();
    }
}
