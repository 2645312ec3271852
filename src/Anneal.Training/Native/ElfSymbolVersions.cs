// Reads and patches the symbol-version tables of a 64-bit little-endian ELF shared library.
//
// Why: TorchSharp 0.107's libLibTorchSharp.so asks for GLIBCXX_3.4.32 (for one symbol,
// _ZSt21ios_base_library_initv, that it never calls); Debian 12's libstdc++ stops at 3.4.30,
// so the loader refuses the file. Marking that version need weak (VER_FLG_WEAK in vna_flags)
// and making the symbol unversioned (index 1 in .gnu.version) changes two bytes and the
// library loads. Layouts follow the System V gABI and the LSB symbol-versioning chapter:
//   Elf64_Shdr  64 bytes   Verneed 16 bytes   Vernaux 16 bytes
//   Elf64_Sym   24 bytes   Verdef  20 bytes   Verdaux  8 bytes   Versym 2 bytes
using System.Buffers.Binary;
using System.Text;

namespace Anneal.Training.Native;

/// <summary>One version a library needs from another (a Vernaux entry).</summary>
/// <param name="File">The library it is needed from, e.g. "libstdc++.so.6".</param>
/// <param name="Name">The version name, e.g. "GLIBCXX_3.4.32".</param>
/// <param name="Index">The version index symbols refer to in .gnu.version.</param>
/// <param name="FlagsOffset">File offset of the 2-byte vna_flags field.</param>
public sealed record ElfVersionNeed(string File, string Name, int Index, ushort Flags, long FlagsOffset);

/// <summary>A dynamic symbol bound to a version index (its .gnu.version entry).</summary>
public sealed record ElfVersionedSymbol(string Name, int VersionIndex, long VersymOffset);

public sealed class ElfSymbolVersions
{
    public const ushort VerFlagWeak = 0x2;
    const uint ShtDynsym = 11;
    const uint ShtGnuVerdef = 0x6ffffffd;
    const uint ShtGnuVerneed = 0x6ffffffe;
    const uint ShtGnuVersym = 0x6fffffff;

    public IReadOnlyList<ElfVersionNeed> Needs { get; }
    public IReadOnlyList<ElfVersionedSymbol> Symbols { get; }
    /// <summary>Version names this library defines (Verdef), e.g. every GLIBCXX_* of libstdc++.</summary>
    public IReadOnlyList<string> Definitions { get; }

    ElfSymbolVersions(List<ElfVersionNeed> needs, List<ElfVersionedSymbol> symbols, List<string> definitions)
    {
        Needs = needs;
        Symbols = symbols;
        Definitions = definitions;
    }

    public static ElfSymbolVersions Read(string path) => Parse(File.ReadAllBytes(path), path);

    /// <summary>Parses the version tables; <paramref name="what"/> names the file in errors.</summary>
    public static ElfSymbolVersions Parse(byte[] elf, string what)
    {
        ReadOnlySpan<byte> b = elf;
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
            throw new InvalidDataException($"{what}: not an ELF file (missing \\x7fELF magic).");
        if (b[4] != 2 || b[5] != 1)
            throw new InvalidDataException($"{what}: expected a 64-bit little-endian ELF file, found class {b[4]}, data {b[5]}.");

        long shoff = checked((long)U64(b, 0x28));
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        if (shentsize != 64 || shoff <= 0 || shoff + (long)shnum * 64 > b.Length)
            throw new InvalidDataException($"{what}: section header table out of range (offset {shoff}, {shnum} × {shentsize} bytes).");

        var sections = new List<Section>(shnum);
        for (int i = 0; i < shnum; i++)
        {
            int o = checked((int)(shoff + i * 64L));
            sections.Add(new Section(U32(b, o + 4), checked((long)U64(b, o + 24)), checked((long)U64(b, o + 32)),
                U32(b, o + 40), U32(b, o + 44), checked((long)U64(b, o + 56))));
        }
        foreach (var s in sections)
            if (s.Type != 8 /* NOBITS */ && (s.Offset < 0 || s.Offset + s.Size > b.Length))
                throw new InvalidDataException($"{what}: a section (type 0x{s.Type:x}) lies outside the file.");

        var needs = new List<ElfVersionNeed>();
        var definitions = new List<string>();
        var symbols = new List<ElfVersionedSymbol>();

        foreach (var vn in sections.Where(s => s.Type == ShtGnuVerneed))
        {
            var strtab = sections[(int)vn.Link];
            long at = vn.Offset;
            for (uint n = 0; n < vn.Info; n++)
            {
                int cnt = U16(b, at + 2);
                string file = Str(b, strtab, U32(b, at + 4));
                long aux = at + U32(b, at + 8);
                for (int k = 0; k < cnt; k++)
                {
                    needs.Add(new ElfVersionNeed(file, Str(b, strtab, U32(b, aux + 8)), U16(b, aux + 6), U16(b, aux + 4), aux + 4));
                    uint nextAux = U32(b, aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = U32(b, at + 12);
                if (next == 0) break;
                at += next;
            }
        }

        foreach (var vd in sections.Where(s => s.Type == ShtGnuVerdef))
        {
            var strtab = sections[(int)vd.Link];
            long at = vd.Offset;
            for (uint n = 0; n < vd.Info; n++)
            {
                long aux = at + U32(b, at + 12);
                definitions.Add(Str(b, strtab, U32(b, aux)));
                uint next = U32(b, at + 16);
                if (next == 0) break;
                at += next;
            }
        }

        var versym = sections.FirstOrDefault(s => s.Type == ShtGnuVersym);
        var dynsym = sections.FirstOrDefault(s => s.Type == ShtDynsym);
        if (versym is not null && dynsym is not null)
        {
            var strtab = sections[(int)dynsym.Link];
            long count = Math.Min(dynsym.Size / 24, versym.Size / 2);
            for (long i = 0; i < count; i++)
            {
                long vo = versym.Offset + i * 2;
                int index = U16(b, vo) & 0x7fff;
                if (index <= 1) continue;  // 0 local, 1 global unversioned
                symbols.Add(new ElfVersionedSymbol(Str(b, strtab, U32(b, dynsym.Offset + i * 24)), index, vo));
            }
        }
        return new ElfSymbolVersions(needs, symbols, definitions);
    }

    /// <summary>
    /// Makes the library loadable without the given needed versions: sets VER_FLG_WEAK on each and
    /// makes the symbols bound to them unversioned. Refuses (InvalidOperationException naming the
    /// symbols) when a symbol outside <paramref name="uncalledSymbols"/> depends on one of them, since
    /// such a symbol could then bind to an older, incompatible definition.
    /// Returns the number of bytes changed.
    /// </summary>
    public int Weaken(byte[] elf, IReadOnlyCollection<ElfVersionNeed> missing, IReadOnlySet<string> uncalledSymbols, string what)
    {
        int changed = 0;
        foreach (var need in missing)
        {
            var bound = Symbols.Where(s => s.VersionIndex == need.Index).ToList();
            var unsafeSymbols = bound.Where(s => !uncalledSymbols.Contains(s.Name)).Select(s => s.Name).ToList();
            if (unsafeSymbols.Count > 0)
                throw new InvalidOperationException(
                    $"{what} needs {need.Name} from {need.File} for {string.Join(", ", unsafeSymbols)}; " +
                    "only symbols known to be unused can be made unversioned, so this library needs a newer " + need.File + ".");
            ushort flags = (ushort)(need.Flags | VerFlagWeak);
            if (flags != need.Flags)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(elf.AsSpan(checked((int)need.FlagsOffset)), flags);
                changed++;
            }
            foreach (var s in bound)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(elf.AsSpan(checked((int)s.VersymOffset)), 1);
                changed++;
            }
        }
        return changed;
    }

    sealed record Section(uint Type, long Offset, long Size, uint Link, uint Info, long EntSize);

    static ushort U16(ReadOnlySpan<byte> b, long o) => BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(checked((int)o), 2));
    static uint U32(ReadOnlySpan<byte> b, long o) => BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(checked((int)o), 4));
    static ulong U64(ReadOnlySpan<byte> b, long o) => BinaryPrimitives.ReadUInt64LittleEndian(b.Slice(checked((int)o), 8));

    static string Str(ReadOnlySpan<byte> b, Section strtab, uint offset)
    {
        if (offset >= strtab.Size) throw new InvalidDataException($"String offset {offset} outside a string table of {strtab.Size} bytes.");
        var s = b.Slice(checked((int)(strtab.Offset + offset)), checked((int)(strtab.Size - offset)));
        int end = s.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? s : s[..end]);
    }
}
