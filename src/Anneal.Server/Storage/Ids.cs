// Resource ids: a prefix and 24 lowercase base32 characters (120 random bits), e.g. "file_k3j…".
using System.Security.Cryptography;

namespace Anneal.Server.Storage;

public static class Ids
{
    const string Alphabet = "abcdefghijklmnopqrstuvwxyz234567";

    public static string New(string prefix)
    {
        Span<byte> bytes = stackalloc byte[24];
        RandomNumberGenerator.Fill(bytes);
        Span<char> chars = stackalloc char[24];
        for (var i = 0; i < chars.Length; i++) chars[i] = Alphabet[bytes[i] & 31];
        return prefix + "_" + new string(chars);
    }
}
