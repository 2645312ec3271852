// GPT-2's byte-level alphabet, used by Qwen's ByteLevel pre-tokenizer and decoder: every byte 0..255 is
// shown as one printable character, so BPE works on strings of visible characters. Printable Latin-1
// bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes are mapped in order to
// U+0100, U+0101, … (space 0x20 → 'Ġ' U+0120, newline 0x0A → 'Ċ' U+010A).
namespace Anneal.Training.Tokenization;

public static class ByteLevel
{
    /// <summary>Character for each byte value.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Byte value for each alphabet character; -1 for characters outside the alphabet.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    static short[] BuildCharToByte()
    {
        var map = new short[512];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++) map[ByteToChar[b]] = (short)b;
        return map;
    }

    /// <summary>"héllo" → "hÃ©llo": the alphabet string of the UTF-8 bytes.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), (chars, b) =>
        {
            for (int i = 0; i < b.Length; i++) chars[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>Appends the bytes an alphabet string stands for; false if it holds a character outside the alphabet.</summary>
    public static bool TryDecode(string token, List<byte> bytes)
    {
        foreach (char c in token)
        {
            if (c >= CharToByte.Length || CharToByte[c] < 0) return false;
            bytes.Add((byte)CharToByte[c]);
        }
        return true;
    }
}
