// The fast path of dataset validation: one forward pass of Utf8JsonReader over a record's UTF-8
// bytes that proves the record valid under DatasetValidator's rules, without a document, a string
// or any allocation. It answers only "valid" or "not proven". Whatever it does not handle itself
// (image parts and legacy image fields, escaped or duplicate keys, escaped enum values) and every
// broken rule leave the record to the document-based checker, which reports the errors: so error
// messages have one source, and this scan must never accept a record that checker refuses
// (RecordScanTests hold the two to that on every rule and on generated variations).
//
// The rules, as RecordChecker states them:
//   record   object; keys messages (required list), tools (list or null), metadata (object or null)
//   messages ≥ 2 objects, ≥ 1 with role "assistant"; role one of system|user|assistant|tool
//   content  string (non-blank for user, and for assistant without tool_calls) or list of text
//            parts (non-empty for the same roles); null/absent only for assistant with tool_calls
//   tool_calls (assistant only) non-empty list of {id?, type? = "function", function{name, arguments}}
//            with arguments a string holding a JSON object; ids unique within the message
//   tool_call_id (tool only) a string naming an earlier call's id; name, reasoning_content string|null
//   tools    {type: "function", function{name, parameters? object|null}}
//   every string and key valid Unicode (no lone surrogate escape such as \ud800)
using System.Text;
using System.Text.Json;

namespace Anneal.Core.Datasets;

internal sealed class RecordScan
{
    static readonly JsonReaderOptions Options = new() { MaxDepth = 64, CommentHandling = JsonCommentHandling.Disallow };

    // Tool call ids seen so far in the record, as (start, length) in the line: tool_call_id looks them up.
    readonly List<(int Start, int Length)> _callIds = [];
    // Ids of the current message's calls (they must be unique within it).
    int _callIdsOfMessageFrom;
    byte[] _unescaped = new byte[4096];

    /// <summary>True when the record is certainly valid; false means "let the full checker decide".</summary>
    public bool IsValid(ReadOnlySpan<byte> line)
    {
        _callIds.Clear();
        try
        {
            var r = new Utf8JsonReader(line, isFinalBlock: true, new JsonReaderState(Options));
            return Record(ref r, line) && !r.Read(); // anything but whitespace after the record throws
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            return false;
        }
    }

    bool Record(ref Utf8JsonReader r, ReadOnlySpan<byte> line)
    {
        if (!Next(ref r) || r.TokenType != JsonTokenType.StartObject) return false;
        var seen = 0;
        while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueIsEscaped) return false;
            var key = r.ValueSpan;
            int bit;
            if (key.SequenceEqual("messages"u8)) bit = 1;
            else if (key.SequenceEqual("tools"u8)) bit = 2;
            else if (key.SequenceEqual("metadata"u8)) bit = 4;
            else return false; // images, image_url (legacy vision) or an unknown key
            if ((seen & bit) != 0) return false;
            seen |= bit;
            if (!Next(ref r)) return false;
            var ok = bit switch
            {
                1 => Messages(ref r, line),
                2 => r.TokenType == JsonTokenType.Null || Tools(ref r),
                _ => r.TokenType == JsonTokenType.Null || (r.TokenType == JsonTokenType.StartObject && SkipChecked(ref r)),
            };
            if (!ok) return false;
        }
        return r.TokenType == JsonTokenType.EndObject && (seen & 1) != 0;
    }

    bool Messages(ref Utf8JsonReader r, ReadOnlySpan<byte> line)
    {
        if (r.TokenType != JsonTokenType.StartArray) return false;
        int count = 0, assistants = 0;
        while (Next(ref r) && r.TokenType != JsonTokenType.EndArray)
        {
            if (r.TokenType != JsonTokenType.StartObject || !Message(ref r, line, out var role)) return false;
            count++;
            if (role == Role.Assistant) assistants++;
        }
        return r.TokenType == JsonTokenType.EndArray && count >= 2 && assistants > 0;
    }

    enum Role { None, System, User, Assistant, Tool }
    enum Content { Absent, Text, Blank, Parts, EmptyParts }

    bool Message(ref Utf8JsonReader r, ReadOnlySpan<byte> line, out Role role)
    {
        role = Role.None;
        var content = Content.Absent;
        var hasToolCalls = false;
        (int Start, int Length)? callId = null;
        _callIdsOfMessageFrom = _callIds.Count;
        var seen = 0;
        while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueIsEscaped) return false;
            var key = r.ValueSpan;
            int bit;
            if (key.SequenceEqual("role"u8)) bit = 1;
            else if (key.SequenceEqual("content"u8)) bit = 2;
            else if (key.SequenceEqual("tool_calls"u8)) bit = 4;
            else if (key.SequenceEqual("tool_call_id"u8)) bit = 8;
            else if (key.SequenceEqual("name"u8) || key.SequenceEqual("reasoning_content"u8)) bit = key.Length == 4 ? 16 : 32;
            else return false;
            if ((seen & bit) != 0 || !Next(ref r)) return false;
            seen |= bit;
            switch (bit)
            {
                case 1:
                    if (r.TokenType != JsonTokenType.String || r.ValueIsEscaped) return false;
                    var v = r.ValueSpan;
                    role = v.SequenceEqual("user"u8) ? Role.User
                        : v.SequenceEqual("assistant"u8) ? Role.Assistant
                        : v.SequenceEqual("system"u8) ? Role.System
                        : v.SequenceEqual("tool"u8) ? Role.Tool
                        : Role.None;
                    if (role == Role.None) return false;
                    break;
                case 2:
                    switch (r.TokenType)
                    {
                        case JsonTokenType.Null: break;
                        case JsonTokenType.String: content = HasVisibleText(r.ValueSpan, r.ValueIsEscaped) ? Content.Text : Content.Blank; break;
                        case JsonTokenType.StartArray:
                            if (!Parts(ref r, out var parts)) return false;
                            content = parts > 0 ? Content.Parts : Content.EmptyParts;
                            break;
                        default: return false;
                    }
                    break;
                case 4:
                    if (r.TokenType == JsonTokenType.Null) break;
                    if (r.TokenType != JsonTokenType.StartArray || !ToolCalls(ref r, line)) return false;
                    hasToolCalls = true;
                    break;
                case 8:
                    if (r.TokenType != JsonTokenType.String || r.ValueIsEscaped) return false;
                    callId = ((int)r.TokenStartIndex + 1, r.ValueSpan.Length);
                    break;
                default:
                    if (r.TokenType is not (JsonTokenType.String or JsonTokenType.Null)) return false;
                    break;
            }
        }
        if (r.TokenType != JsonTokenType.EndObject || role == Role.None) return false;
        if (hasToolCalls && role != Role.Assistant) return false;
        var mustHaveText = role == Role.User || (role == Role.Assistant && !hasToolCalls);
        switch (content)
        {
            case Content.Absent when !(role == Role.Assistant && hasToolCalls):
            case Content.Blank or Content.EmptyParts when mustHaveText:
                return false;
        }
        if (callId is { } id)
        {
            if (role != Role.Tool) return false;
            var wanted = line.Slice(id.Start, id.Length);
            var known = false;
            foreach (var (s, l) in _callIds)
                if (line.Slice(s, l).SequenceEqual(wanted)) { known = true; break; }
            if (!known) return false;
        }
        return true;
    }

    /// <summary>A content list: text parts only (image parts go to the full checker, which knows the model).</summary>
    bool Parts(ref Utf8JsonReader r, out int count)
    {
        count = 0;
        while (Next(ref r) && r.TokenType != JsonTokenType.EndArray)
        {
            if (r.TokenType != JsonTokenType.StartObject) return false;
            bool isText = false, hasText = false;
            while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueIsEscaped) return false;
                var key = r.ValueSpan;
                if (key.SequenceEqual("type"u8))
                {
                    if (isText || !Next(ref r) || r.TokenType != JsonTokenType.String || r.ValueIsEscaped || !r.ValueSpan.SequenceEqual("text"u8)) return false;
                    isText = true;
                }
                else if (key.SequenceEqual("text"u8))
                {
                    if (hasText || !Next(ref r) || r.TokenType != JsonTokenType.String) return false;
                    hasText = true;
                }
                else if (!Next(ref r) || !SkipChecked(ref r)) return false; // other keys of a part are not checked
            }
            if (r.TokenType != JsonTokenType.EndObject || !isText || !hasText) return false;
            count++;
        }
        return r.TokenType == JsonTokenType.EndArray;
    }

    bool ToolCalls(ref Utf8JsonReader r, ReadOnlySpan<byte> line)
    {
        var count = 0;
        while (Next(ref r) && r.TokenType != JsonTokenType.EndArray)
        {
            if (r.TokenType != JsonTokenType.StartObject) return false;
            var seen = 0;
            while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueIsEscaped) return false;
                var key = r.ValueSpan;
                int bit = key.SequenceEqual("id"u8) ? 1 : key.SequenceEqual("type"u8) ? 2 : key.SequenceEqual("function"u8) ? 4 : 0;
                if (bit == 0 || (seen & bit) != 0 || !Next(ref r)) return false;
                seen |= bit;
                switch (bit)
                {
                    case 1:
                        if (r.TokenType != JsonTokenType.String || r.ValueIsEscaped) return false;
                        var start = (int)r.TokenStartIndex + 1;
                        var id = r.ValueSpan;
                        for (var i = _callIdsOfMessageFrom; i < _callIds.Count; i++)
                            if (line.Slice(_callIds[i].Start, _callIds[i].Length).SequenceEqual(id)) return false;
                        _callIds.Add((start, id.Length));
                        break;
                    case 2:
                        if (r.TokenType != JsonTokenType.String || r.ValueIsEscaped || !r.ValueSpan.SequenceEqual("function"u8)) return false;
                        break;
                    default:
                        if (r.TokenType != JsonTokenType.StartObject || !CallFunction(ref r)) return false;
                        break;
                }
            }
            if (r.TokenType != JsonTokenType.EndObject || (seen & 4) == 0) return false;
            count++;
        }
        return r.TokenType == JsonTokenType.EndArray && count > 0;
    }

    /// <summary>{name: non-empty string, arguments: a string holding a JSON object}; other keys are not checked.</summary>
    bool CallFunction(ref Utf8JsonReader r)
    {
        bool hasName = false, hasArguments = false;
        while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueIsEscaped) return false;
            var key = r.ValueSpan;
            if (key.SequenceEqual("name"u8))
            {
                // An escape always stands for at least one character, so raw length 0 ⇔ "".
                if (hasName || !Next(ref r) || r.TokenType != JsonTokenType.String || r.ValueSpan.Length == 0) return false;
                hasName = true;
            }
            else if (key.SequenceEqual("arguments"u8))
            {
                if (hasArguments || !Next(ref r) || r.TokenType != JsonTokenType.String || !HoldsJsonObject(ref r)) return false;
                hasArguments = true;
            }
            else if (!Next(ref r) || !SkipChecked(ref r)) return false;
        }
        return r.TokenType == JsonTokenType.EndObject && hasName && hasArguments;
    }

    bool HoldsJsonObject(ref Utf8JsonReader r)
    {
        ReadOnlySpan<byte> json;
        if (!r.ValueIsEscaped) json = r.ValueSpan;
        else
        {
            // Unescaped text is never longer than its escaped form.
            if (_unescaped.Length < r.ValueSpan.Length) _unescaped = new byte[Math.Max(r.ValueSpan.Length, 2 * _unescaped.Length)];
            json = _unescaped.AsSpan(0, r.CopyString(_unescaped));
        }
        var inner = new Utf8JsonReader(json, isFinalBlock: true, new JsonReaderState(Options));
        if (!inner.Read() || inner.TokenType != JsonTokenType.StartObject) return false;
        inner.Skip();
        return !inner.Read();
    }

    bool Tools(ref Utf8JsonReader r)
    {
        if (r.TokenType != JsonTokenType.StartArray) return false;
        while (Next(ref r) && r.TokenType != JsonTokenType.EndArray)
        {
            if (r.TokenType != JsonTokenType.StartObject) return false;
            bool isFunction = false, hasFunction = false;
            while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueIsEscaped) return false;
                var key = r.ValueSpan;
                if (key.SequenceEqual("type"u8))
                {
                    if (isFunction || !Next(ref r) || r.TokenType != JsonTokenType.String || r.ValueIsEscaped || !r.ValueSpan.SequenceEqual("function"u8)) return false;
                    isFunction = true;
                }
                else if (key.SequenceEqual("function"u8))
                {
                    if (hasFunction || !Next(ref r) || r.TokenType != JsonTokenType.StartObject || !ToolFunction(ref r)) return false;
                    hasFunction = true;
                }
                else if (!Next(ref r) || !SkipChecked(ref r)) return false;
            }
            if (r.TokenType != JsonTokenType.EndObject || !isFunction || !hasFunction) return false;
        }
        return r.TokenType == JsonTokenType.EndArray;
    }

    /// <summary>{name: non-empty string, parameters?: object | null}; other keys are not checked.</summary>
    bool ToolFunction(ref Utf8JsonReader r)
    {
        bool hasName = false, hasParameters = false;
        while (Next(ref r) && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueIsEscaped) return false;
            var key = r.ValueSpan;
            if (key.SequenceEqual("name"u8))
            {
                if (hasName || !Next(ref r) || r.TokenType != JsonTokenType.String || r.ValueSpan.Length == 0) return false;
                hasName = true;
            }
            else if (key.SequenceEqual("parameters"u8))
            {
                if (hasParameters || !Next(ref r)) return false;
                if (r.TokenType == JsonTokenType.StartObject) { if (!SkipChecked(ref r)) return false; }
                else if (r.TokenType != JsonTokenType.Null) return false;
                hasParameters = true;
            }
            else if (!Next(ref r) || !SkipChecked(ref r)) return false;
        }
        return r.TokenType == JsonTokenType.EndObject && hasName;
    }

    /// <summary>
    /// Steps over the value the reader is on (a scalar, or a whole object or list) whose shape is
    /// not checked, still refusing lone surrogates in its strings and keys.
    /// </summary>
    static bool SkipChecked(ref Utf8JsonReader r)
    {
        if (r.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return true;
        var depth = r.CurrentDepth;
        while (Next(ref r))
            if (r.CurrentDepth == depth && r.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray) return true;
        return false;
    }

    /// <summary>The next token; false at the end or on a string or key that is not valid Unicode.</summary>
    static bool Next(ref Utf8JsonReader r) =>
        r.Read() && !(r.ValueIsEscaped && r.TokenType is JsonTokenType.String or JsonTokenType.PropertyName && HasLoneSurrogate(r.ValueSpan));

    /// <summary>Whether escaped JSON string bytes spell a UTF-16 surrogate that is not part of a pair.</summary>
    internal static bool HasLoneSurrogate(ReadOnlySpan<byte> raw)
    {
        var i = 0;
        while (true)
        {
            var slash = raw[i..].IndexOf((byte)'\\');
            if (slash < 0) return false;
            i += slash;
            if (raw[i + 1] != (byte)'u') { i += 2; continue; }
            var unit = Hex4(raw.Slice(i + 2, 4));
            i += 6;
            if (unit is >= 0xDC00 and <= 0xDFFF) return true;
            if (unit is >= 0xD800 and <= 0xDBFF)
            {
                if (i + 6 > raw.Length || raw[i] != (byte)'\\' || raw[i + 1] != (byte)'u') return true;
                var low = Hex4(raw.Slice(i + 2, 4));
                if (low is < 0xDC00 or > 0xDFFF) return true;
                i += 6;
            }
        }
    }

    /// <summary>
    /// !string.IsNullOrWhiteSpace of the string these raw (possibly escaped) bytes spell, decided at
    /// the first character that is not white space, usually the first one.
    /// </summary>
    internal static bool HasVisibleText(ReadOnlySpan<byte> raw, bool escaped)
    {
        var i = 0;
        while (i < raw.Length)
        {
            var b = raw[i];
            if (b == (byte)'\\' && escaped)
            {
                var e = raw[i + 1];
                char c;
                if (e == (byte)'u')
                {
                    c = (char)Hex4(raw.Slice(i + 2, 4));
                    i += 6;
                }
                else
                {
                    c = e switch { (byte)'n' => '\n', (byte)'t' => '\t', (byte)'r' => '\r', (byte)'f' => '\f', (byte)'b' => '\b', _ => (char)e };
                    i += 2;
                }
                if (!char.IsWhiteSpace(c)) return true;
            }
            else if (b < 0x80)
            {
                if (!char.IsWhiteSpace((char)b)) return true;
                i++;
            }
            else
            {
                Rune.DecodeFromUtf8(raw[i..], out var rune, out var n);
                if (!Rune.IsWhiteSpace(rune)) return true;
                i += n;
            }
        }
        return false;
    }

    // The reader has already checked that \u is followed by four hex digits.
    static int Hex4(ReadOnlySpan<byte> digits)
    {
        var v = 0;
        foreach (var d in digits) v = (v << 4) | (d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
        return v;
    }
}
