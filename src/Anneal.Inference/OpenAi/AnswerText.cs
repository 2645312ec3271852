// Turns one choice's token stream into text the way OpenAI-compatible servers do: decode the
// tokens so far, cut at the first stop sequence (which is not returned), and for streaming hand
// out only text that can no longer change: a trailing partial UTF-8 character (U+FFFD) or a
// suffix that could still become a stop sequence (or `<tool_call>`, when tools were given) waits
// for the next token.
using Anneal.Training.Tokenization;

namespace Anneal.Inference.OpenAi;

public sealed class AnswerText(Qwen3Tokenizer tokenizer, IReadOnlyList<string> stop, string? holdFrom = null)
{
    readonly List<int> _tokens = [];
    string _text = "";
    int _emitted;

    /// <summary>Tokens that count as completion tokens (those up to a stop sequence).</summary>
    public int Tokens => _tokens.Count;
    public string Text => _text;
    /// <summary>True once a stop sequence was found: the answer ends here.</summary>
    public bool Stopped { get; private set; }
    public IReadOnlyList<int> TokenIds => _tokens;

    /// <summary>Adds a token; returns the text that became final (possibly empty).</summary>
    public string Add(int token)
    {
        if (Stopped) return "";
        _tokens.Add(token);
        var text = tokenizer.Decode(_tokens);
        var cut = stop.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(at => at >= 0).DefaultIfEmpty(-1).Min();
        if (cut >= 0)
        {
            text = text[..cut];
            Stopped = true;
        }
        _text = text;
        return Stopped ? Flush() : Take(SafeLength(text));
    }

    /// <summary>The rest of the text, at the end of the answer.</summary>
    public string Flush() => Take(_text.Length);

    /// <summary>
    /// At the end of an answer whose content is `content` (its tool calls taken out): the part of it
    /// not handed out yet; the tool-call blocks are never streamed as content.
    /// </summary>
    public string FlushContent(string content)
    {
        var sent = _text[.._emitted];
        _emitted = _text.Length;
        return content.StartsWith(sent, StringComparison.Ordinal) ? content[sent.Length..] : "";
    }

    string Take(int upTo)
    {
        if (upTo <= _emitted) return "";
        var delta = _text[_emitted..upTo];
        _emitted = upTo;
        return delta;
    }

    int SafeLength(string text)
    {
        var safe = text.Length;
        while (safe > _emitted && text[safe - 1] == '\uFFFD') safe--;
        foreach (var s in holdFrom is null ? stop : stop.Append(holdFrom))
            for (var k = Math.Min(s.Length - 1, safe); k > 0; k--)
                if (string.CompareOrdinal(text, safe - k, s, 0, k) == 0) { safe = Math.Min(safe, safe - k); break; }
        // Once `<tool_call>` appears, the rest of the answer is a tool call, not content.
        if (holdFrom is not null && text.IndexOf(holdFrom, StringComparison.Ordinal) is var t and >= 0) safe = Math.Min(safe, t);
        return Math.Max(safe, _emitted);
    }
}
