// Byte-level BPE tokenizer for Qwen3 model folders, read from Hugging Face's tokenizer.json and
// tokenizer_config.json. Encoding follows the `tokenizers` library step by step:
//   1. added tokens (<|im_start|>, <think>, …) are cut out of the raw text first, leftmost-longest;
//   2. each remaining segment is NFC-normalised (normalizer "NFC");
//   3. split into pieces by Qwen's regex (Qwen3PreTokenizer);
//   4. each piece becomes its UTF-8 bytes in GPT-2's byte alphabet (ByteLevel);
//   5. BPE merges the pair of lowest rank (leftmost first on ties) until none applies.
// Results of step 5 are cached per piece: natural text repeats its words, so most pieces hit the cache.
using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace Anneal.Training.Tokenization;

public sealed class Qwen3Tokenizer
{
    /// <summary>A token cut out of the text before BPE. Special ones can be skipped when decoding.</summary>
    public sealed record AddedToken(int Id, string Content, bool Special);

    readonly Dictionary<string, int> _vocab;          // token string (byte alphabet) → id
    readonly string?[] _idToToken;                    // id → token string, null for unused ids
    readonly int[] _tokenByteLength;                  // id → number of text bytes it stands for
    readonly Dictionary<long, (int Rank, int Merged)> _merges; // (left id << 32 | right id) → rank, merged id
    readonly int[] _byteToId = new int[256];
    readonly bool _ignoreMerges, _nfc;
    readonly Dictionary<int, AddedToken> _addedById = [];
    readonly Dictionary<char, AddedToken[]> _addedByFirstChar; // longest first
    readonly SearchValues<char> _addedFirstChars;
    readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheBySpan;
    const int CacheLimit = 200_000, CachedPieceMaxLength = 256;
    int _cacheSize;
    const int MaxId = 1 << 24; // ids index arrays; real vocabularies are far smaller (Qwen3: 151,669)

    public int VocabSize { get; }
    public int EosTokenId { get; }
    public int PadTokenId { get; }
    public string EosToken { get; }
    public string PadToken { get; }
    public IReadOnlyCollection<AddedToken> AddedTokens => _addedById.Values;
    /// <summary>The Jinja chat template of tokenizer_config.json, when it has one.</summary>
    public string? ChatTemplate { get; }
    public bool HasChatTemplate => ChatTemplate is not null;

    Qwen3Tokenizer(Dictionary<string, int> vocab, List<(string Left, string Right)> merges, bool ignoreMerges, bool nfc,
        List<AddedToken> added, string eos, string pad, string? chatTemplate, string source)
    {
        _vocab = vocab;
        _cacheBySpan = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _ignoreMerges = ignoreMerges;
        _nfc = nfc;
        foreach (var a in added) _addedById[a.Id] = a;
        VocabSize = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max() + 1, added.Count == 0 ? 0 : added.Max(a => a.Id) + 1);

        _idToToken = new string?[VocabSize];
        _tokenByteLength = new int[VocabSize];
        var bytes = new List<byte>();
        foreach (var (token, id) in vocab)
        {
            _idToToken[id] = token;
            bytes.Clear();
            _tokenByteLength[id] = ByteLevel.TryDecode(token, bytes) ? bytes.Count : Encoding.UTF8.GetByteCount(token);
        }
        foreach (var a in added)
        {
            _idToToken[a.Id] = a.Content;
            _tokenByteLength[a.Id] = Encoding.UTF8.GetByteCount(a.Content);
        }

        for (int b = 0; b < 256; b++)
        {
            if (!vocab.TryGetValue(ByteLevel.ByteToChar[b].ToString(), out _byteToId[b]))
                throw new InvalidDataException($"{source}: model.vocab has no token for byte 0x{b:X2} ('{ByteLevel.ByteToChar[b]}'); a byte-level BPE vocabulary needs all 256");
        }

        _merges = new Dictionary<long, (int, int)>(merges.Count, PairComparer.Instance);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!vocab.TryGetValue(l, out int li) || !vocab.TryGetValue(r, out int ri) || !vocab.TryGetValue(l + r, out int mi))
                throw new InvalidDataException($"{source}: model.merges[{rank}] \"{l} {r}\" uses a token missing from model.vocab");
            _merges.TryAdd(PairKey(li, ri), (rank, mi)); // a repeated merge keeps its first (lowest) rank
        }

        _addedByFirstChar = added.Where(a => a.Content.Length > 0).GroupBy(a => a.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(a => a.Content.Length).ToArray());
        _addedFirstChars = SearchValues.Create(_addedByFirstChar.Keys.ToArray());

        EosToken = eos;
        PadToken = pad;
        EosTokenId = TokenToId(eos) ?? throw new InvalidDataException($"{source}: eos_token \"{eos}\" is not a token of tokenizer.json");
        PadTokenId = TokenToId(pad) ?? throw new InvalidDataException($"{source}: pad_token \"{pad}\" is not a token of tokenizer.json");
        ChatTemplate = chatTemplate;
    }

    static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>
    /// long.GetHashCode is high ^ low, which for two ids below 2^18 leaves 2^18 buckets for ~151k merges
    /// and long collision chains; a multiplicative hash spreads the pairs.
    /// </summary>
    sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();
        public bool Equals(long a, long b) => a == b;
        public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
    }

    // ---- Loading -------------------------------------------------------------------------------------

    /// <summary>Loads tokenizer.json and tokenizer_config.json from a Hugging Face model folder.</summary>
    public static Qwen3Tokenizer Load(string modelDir)
    {
        var tokenizerPath = Path.Combine(modelDir, "tokenizer.json");
        if (!Directory.Exists(modelDir))
            throw new DirectoryNotFoundException($"Model folder {modelDir} does not exist; expected a folder holding tokenizer.json and tokenizer_config.json");
        if (!File.Exists(tokenizerPath))
            throw new FileNotFoundException($"tokenizer.json not found in {modelDir}; expected a Hugging Face model folder holding tokenizer.json and tokenizer_config.json", tokenizerPath);
        var configPath = Path.Combine(modelDir, "tokenizer_config.json");
        return FromFiles(tokenizerPath, File.Exists(configPath) ? configPath : null);
    }

    /// <summary>
    /// Loads from explicit files. Without tokenizer_config.json, eos is &lt;|im_end|&gt; and pad &lt;|endoftext|&gt;
    /// (Qwen3's values) and there is no chat template.
    /// </summary>
    public static Qwen3Tokenizer FromFiles(string tokenizerJsonPath, string? tokenizerConfigPath)
    {
        try { return Read(tokenizerJsonPath, tokenizerConfigPath); }
        catch (InvalidOperationException e) // a JsonElement of another kind than the format has there
        {
            throw new InvalidDataException($"{tokenizerJsonPath}: unexpected structure ({e.Message}); expected a Hugging Face tokenizer.json of a byte-level BPE model", e);
        }
    }

    static Qwen3Tokenizer Read(string tokenizerJsonPath, string? tokenizerConfigPath)
    {
        string eos = "<|im_end|>", pad = "<|endoftext|>";
        string? chatTemplate = null;
        if (tokenizerConfigPath is not null)
        {
            using var config = ParseFile(tokenizerConfigPath);
            var root = config.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{tokenizerConfigPath}: expected a JSON object at the top level");
            eos = TokenName(root, "eos_token", tokenizerConfigPath) ?? eos;
            pad = TokenName(root, "pad_token", tokenizerConfigPath) ?? eos;
            if (root.TryGetProperty("chat_template", out var t))
            {
                // A string, or a list of {"name", "template"} of which "default" is the chat template.
                if (t.ValueKind == JsonValueKind.String) chatTemplate = t.GetString();
                else if (t.ValueKind == JsonValueKind.Array)
                    chatTemplate = t.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.Object && x.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default")
                        .Select(x => x.TryGetProperty("template", out var tt) && tt.ValueKind == JsonValueKind.String ? tt.GetString() : null).FirstOrDefault();
            }
        }

        using var doc = ParseFile(tokenizerJsonPath);
        var src = tokenizerJsonPath;
        var rootEl = doc.RootElement;
        if (!rootEl.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{src}: missing key \"model\"; expected the BPE model object");
        var type = model.TryGetProperty("type", out var ty) ? ty.GetString() : "BPE";
        if (type != "BPE") throw new InvalidDataException($"{src}: model.type is \"{type}\"; expected \"BPE\"");
        foreach (var key in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() != "")
                throw new InvalidDataException($"{src}: model.{key} is \"{v.GetString()}\"; only byte-level BPE without affixes is supported");
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;

        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{src}: model.vocab missing or not an object; expected {{\"token\": id, …}}");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0 || id >= MaxId)
                throw new InvalidDataException($"{src}: model.vocab[\"{p.Name}\"] is {p.Value.GetRawText()}; expected an integer id from 0 to {MaxId - 1}");
            vocab[p.Name] = id;
        }

        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergesEl))
        {
            if (mergesEl.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{src}: model.merges is {mergesEl.ValueKind.ToString().ToLowerInvariant()}; expected a list");
            int i = 0;
            foreach (var m in mergesEl.EnumerateArray())
            {
                // Two forms: "Ġ t" (older files) and ["Ġ", "t"] (tokenizers ≥ 0.20).
                if (m.ValueKind == JsonValueKind.String)
                {
                    var parts = m.GetString()!.Split(' ');
                    if (parts.Length != 2) throw new InvalidDataException($"{src}: model.merges[{i}] is \"{m.GetString()}\"; expected two tokens separated by one space");
                    merges.Add((parts[0], parts[1]));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                else
                    throw new InvalidDataException($"{src}: model.merges[{i}] is {m.GetRawText()}; expected \"a b\" or [\"a\", \"b\"]");
                i++;
            }
        }

        var added = new List<AddedToken>();
        if (rootEl.TryGetProperty("added_tokens", out var addedEl) && addedEl.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var a in addedEl.EnumerateArray())
            {
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("id", out var idEl) || idEl.ValueKind != JsonValueKind.Number
                    || !idEl.TryGetInt32(out int id) || id < 0 || id >= MaxId || !a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{src}: added_tokens[{i}] needs an integer \"id\" and a string \"content\"");
                foreach (var flag in new[] { "lstrip", "rstrip", "single_word" })
                    if (a.TryGetProperty(flag, out var f) && f.ValueKind == JsonValueKind.True)
                        throw new InvalidDataException($"{src}: added_tokens[{i}] (\"{c.GetString()}\") sets {flag}: true, which this tokenizer does not support");
                added.Add(new AddedToken(id, c.GetString()!, a.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True));
                i++;
            }
        }

        bool nfc = CheckPipeline(rootEl, src);
        return new Qwen3Tokenizer(vocab, merges, ignoreMerges, nfc, added, eos, pad, chatTemplate, src);
    }

    /// <summary>Refuses pipelines other than Qwen's (NFC or none; Split(Qwen regex) + ByteLevel; ByteLevel decoder).</summary>
    static bool CheckPipeline(JsonElement root, string src)
    {
        bool nfc = false;
        if (root.TryGetProperty("normalizer", out var n) && n.ValueKind == JsonValueKind.Object)
        {
            var t = n.TryGetProperty("type", out var te) ? te.GetString() : null;
            if (t != "NFC") throw new InvalidDataException($"{src}: normalizer.type is \"{t}\"; supported: \"NFC\" or null");
            nfc = true;
        }

        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{src}: missing pre_tokenizer; expected Qwen's Sequence of Split and ByteLevel");
        var steps = pre.TryGetProperty("type", out var pt) && pt.GetString() == "Sequence" && pre.TryGetProperty("pretokenizers", out var list)
            ? list.EnumerateArray().ToList() : [pre];
        bool split = false, byteLevel = false;
        foreach (var step in steps)
        {
            var t = step.TryGetProperty("type", out var te) ? te.GetString() : null;
            if (t == "Split")
            {
                var pattern = step.TryGetProperty("pattern", out var pat) && pat.TryGetProperty("Regex", out var rx) ? rx.GetString() : null;
                if (pattern != Qwen3PreTokenizer.Pattern)
                    throw new InvalidDataException($"{src}: pre_tokenizer Split pattern is {JsonSerializer.Serialize(pattern)}; only Qwen's pattern {JsonSerializer.Serialize(Qwen3PreTokenizer.Pattern)} is supported");
                split = true;
            }
            else if (t == "ByteLevel")
            {
                if (step.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                    throw new InvalidDataException($"{src}: pre_tokenizer ByteLevel sets add_prefix_space: true; Qwen's is false");
                byteLevel = true;
            }
            else throw new InvalidDataException($"{src}: pre_tokenizer step \"{t}\" is not supported; expected Split (Qwen's regex) and ByteLevel");
        }
        if (!split || !byteLevel) throw new InvalidDataException($"{src}: pre_tokenizer must be a Split with Qwen's regex followed by ByteLevel");

        if (root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object &&
            (d.TryGetProperty("type", out var dt) ? dt.GetString() : null) != "ByteLevel")
            throw new InvalidDataException($"{src}: decoder.type is \"{d.GetProperty("type").GetString()}\"; expected \"ByteLevel\"");
        return nfc;
    }

    static JsonDocument ParseFile(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}): {e.Message}", e);
        }
    }

    /// <summary>"eos_token": "&lt;|im_end|&gt;" or {"content": "&lt;|im_end|&gt;", …} or null.</summary>
    static string? TokenName(JsonElement root, string key, string src)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        throw new InvalidDataException($"{src}: {key} is {v.GetRawText()}; expected a token string or {{\"content\": \"…\"}}");
    }

    // ---- Vocabulary ----------------------------------------------------------------------------------

    /// <summary>Id of a token string as written in tokenizer.json (byte alphabet, e.g. "Ġhello"), or an added token.</summary>
    public int? TokenToId(string token)
    {
        foreach (var a in _addedById.Values) if (a.Content == token) return a.Id;
        return _vocab.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>Token string of an id (byte alphabet for vocabulary tokens), or null if the id is unused.</summary>
    public string? IdToToken(int id) => id >= 0 && id < VocabSize ? _idToToken[id] : null;

    public bool IsAddedToken(int id) => _addedById.ContainsKey(id);

    /// <summary>How many bytes of UTF-8 text the token stands for.</summary>
    public int TokenByteLength(int id) => _tokenByteLength[id];

    // ---- Encoding ------------------------------------------------------------------------------------

    public int[] Encode(string text)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        EncodeTo(text, ids, null);
        return ids.ToArray();
    }

    /// <summary>
    /// Appends the ids of <paramref name="text"/>; with <paramref name="starts"/>, also the UTF-16 offset in
    /// <paramref name="text"/> where each token begins (a token holding part of a character starts at that
    /// character). Offsets are exact when the text is already NFC; otherwise every token of a segment that
    /// normalisation changed is given the segment's start.
    /// </summary>
    public void EncodeTo(string text, List<int> ids, List<int>? starts)
    {
        int pos = 0;
        while (pos < text.Length)
        {
            int next = FindAdded(text, pos, out var added);
            if (next > pos) EncodeOrdinary(text, pos, next - pos, ids, starts);
            if (added is null) break;
            ids.Add(added.Id);
            starts?.Add(next);
            pos = next + added.Content.Length;
        }
    }

    /// <summary>Start of the first added token at or after <paramref name="from"/> (text.Length if none).</summary>
    int FindAdded(string text, int from, out AddedToken? found)
    {
        found = null;
        int i = from;
        while (i < text.Length)
        {
            int k = text.AsSpan(i).IndexOfAny(_addedFirstChars);
            if (k < 0) break;
            i += k;
            foreach (var a in _addedByFirstChar[text[i]])
                if (string.CompareOrdinal(text, i, a.Content, 0, a.Content.Length) == 0) { found = a; return i; }
            i++;
        }
        return text.Length;
    }

    void EncodeOrdinary(string text, int offset, int length, List<int> ids, List<int>? starts)
    {
        ReadOnlySpan<char> segment = text.AsSpan(offset, length);
        bool exactOffsets = true;
        if (_nfc && !Nfc.IsNormalized(segment))
        {
            string normalized = Nfc.Normalize(segment.ToString());
            exactOffsets = segment.SequenceEqual(normalized);
            segment = normalized;
        }
        var pieces = new List<(int Start, int Length)>();
        Qwen3PreTokenizer.Split(segment, pieces);
        foreach (var (start, len) in pieces)
        {
            var piece = segment.Slice(start, len);
            int[] pieceIds = Bpe(piece);
            ids.AddRange(pieceIds);
            if (starts is null) continue;
            if (!exactOffsets) { foreach (var _ in pieceIds) starts.Add(offset); continue; }
            if (pieceIds.Length == 1) { starts.Add(offset + start); continue; }
            // Map each UTF-8 byte of the piece to the UTF-16 offset of the character it belongs to.
            var charOfByte = new int[Encoding.UTF8.GetByteCount(piece) + 1];
            for (int c = 0, b = 0; c < len;)
            {
                int w = char.IsHighSurrogate(piece[c]) && c + 1 < len ? 2 : 1;
                int nb = Encoding.UTF8.GetByteCount(piece.Slice(c, w));
                for (int k = 0; k < nb; k++) charOfByte[b + k] = c;
                b += nb;
                c += w;
            }
            int bytePos = 0;
            foreach (int id in pieceIds)
            {
                starts.Add(offset + start + charOfByte[Math.Min(bytePos, charOfByte.Length - 1)]);
                bytePos += _tokenByteLength[id];
            }
        }
    }

    /// <summary>BPE over the bytes of one pre-tokenized piece.</summary>
    int[] Bpe(ReadOnlySpan<char> piece)
    {
        bool cacheable = piece.Length <= CachedPieceMaxLength;
        if (cacheable && _cacheBySpan.TryGetValue(piece, out var cached)) return cached;

        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(piece)];
        Encoding.UTF8.GetBytes(piece, bytes);
        int[] result;
        if (bytes.Length == 1) result = [_byteToId[bytes[0]]];
        else if (_ignoreMerges && _vocab.TryGetValue(ByteLevel.Encode(bytes), out int whole)) result = [whole];
        else if (bytes.Length <= ShortPiece) result = MergeShort(bytes);
        else result = Merge(bytes);

        if (cacheable)
        {
            // ConcurrentDictionary.Count takes every lock, so the size is tracked on the side (roughly: a
            // racing Clear may lose a few increments, which only delays the next Clear).
            if (Interlocked.Increment(ref _cacheSize) > CacheLimit)
            {
                _cache.Clear();
                Interlocked.Exchange(ref _cacheSize, 0);
            }
            _cache.TryAdd(piece.ToString(), result);
        }
        return result;
    }

    const int ShortPiece = 32;

    /// <summary>
    /// BPE for short pieces (most words): keep each adjacent pair's rank in an array, merge the lowest
    /// (leftmost on ties), and look up only the two pairs a merge changes. Same result as the heap below,
    /// without its allocations; the merge table is large, so its lookups are what costs.
    /// </summary>
    int[] MergeShort(byte[] bytes)
    {
        int n = bytes.Length;
        Span<int> id = stackalloc int[n];
        Span<int> rank = stackalloc int[n];   // rank[i]: pair (id[i], id[i+1]); int.MaxValue if none
        Span<int> merged = stackalloc int[n];
        for (int i = 0; i < n; i++) id[i] = _byteToId[bytes[i]];
        void Look(Span<int> id, Span<int> rank, Span<int> merged, int i, int n)
        {
            if (i + 1 < n && _merges.TryGetValue(PairKey(id[i], id[i + 1]), out var m)) { rank[i] = m.Rank; merged[i] = m.Merged; }
            else rank[i] = int.MaxValue;
        }
        for (int i = 0; i < n; i++) Look(id, rank, merged, i, n);
        while (n > 1)
        {
            int best = 0;
            for (int i = 1; i < n - 1; i++) if (rank[i] < rank[best]) best = i;
            if (rank[best] == int.MaxValue) break;
            id[best] = merged[best];
            id[(best + 2)..n].CopyTo(id[(best + 1)..]);
            rank[(best + 2)..n].CopyTo(rank[(best + 1)..]);
            merged[(best + 2)..n].CopyTo(merged[(best + 1)..]);
            n--;
            if (best > 0) Look(id, rank, merged, best - 1, n);
            Look(id, rank, merged, best, n);
        }
        return id[..n].ToArray();
    }

    /// <summary>
    /// Symbols form a linked list over positions; a heap holds candidate pairs ordered by (rank, position).
    /// Entries go stale when a neighbour merges, so each popped entry is checked against the current ids.
    /// </summary>
    int[] Merge(byte[] bytes)
    {
        int n = bytes.Length;
        var id = new int[n];
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++) { id[i] = _byteToId[bytes[i]]; prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }

        var heap = new PriorityQueue<(int Pos, int Left, int Right, int Merged), long>();
        void Push(int pos)
        {
            int r = next[pos];
            if (r < 0) return;
            if (_merges.TryGetValue(PairKey(id[pos], id[r]), out var m))
                heap.Enqueue((pos, id[pos], id[r], m.Merged), ((long)m.Rank << 32) | (uint)pos);
        }
        for (int i = 0; i + 1 < n; i++) Push(i);

        int alive = n;
        while (heap.TryDequeue(out var e, out _))
        {
            int r = next[e.Pos];
            if (id[e.Pos] != e.Left || r < 0 || id[r] != e.Right) continue; // stale
            id[e.Pos] = e.Merged;
            id[r] = -1;
            next[e.Pos] = next[r];
            if (next[r] >= 0) prev[next[r]] = e.Pos;
            alive--;
            if (prev[e.Pos] >= 0) Push(prev[e.Pos]);
            Push(e.Pos);
        }

        var result = new int[alive];
        for (int i = 0, k = 0; i >= 0; i = next[i]) result[k++] = id[i];
        return result;
    }

    // ---- Decoding ------------------------------------------------------------------------------------

    /// <summary>Text of the ids; invalid UTF-8 (a token sequence cut inside a character) becomes U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (skipSpecialTokens && added.Special) continue;
                Flush();
                sb.Append(added.Content);
                continue;
            }
            var token = IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id {id} is not in the vocabulary (size {VocabSize})");
            int before = bytes.Count;
            if (!ByteLevel.TryDecode(token, bytes))
            {
                bytes.RemoveRange(before, bytes.Count - before);
                Flush();
                sb.Append(token);
            }
        }
        Flush();
        return sb.ToString();
    }
}
