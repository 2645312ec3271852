// Loading libtorch through NativeLibraries and the two-byte ELF fix it applies on older libstdc++.
using Anneal.Training.Native;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Native;

[Collection(TorchCollection.Name)]
public class NativeLibrariesTests(ITestOutputHelper output)
{
    [Fact]
    public void Tensor_ops_work_after_EnsureTorchLoaded()
    {
        NativeLibraries.EnsureTorchLoaded();
        using var a = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        using var b = torch.tensor(new float[] { 5, 6, 7, 8 }).reshape(2, 2);
        using var c = torch.matmul(a, b);
        Assert.Equal(new float[] { 19, 22, 43, 50 }, c.data<float>().ToArray());
    }

    [Fact]
    public void EnsureTorchLoaded_is_idempotent_across_threads()
    {
        Parallel.For(0, 8, _ => NativeLibraries.EnsureTorchLoaded());
        using var x = torch.ones(3).sum();
        Assert.Equal(3f, x.item<float>());
        var description = NativeLibraries.Describe();
        output.WriteLine(description);
        Assert.Contains("libLibTorchSharp.so", description);
        Assert.Contains("TorchSharp initialised", description);
        Assert.NotNull(NativeLibraries.LibtorchDirectory);
    }

    [Fact]
    public void The_bridge_is_patched_only_when_libstdcxx_lacks_the_version_and_never_in_place()
    {
        NativeLibraries.EnsureTorchLoaded();
        var stdcxx = File.ReadLines("/proc/self/maps").Select(l => l[(l.IndexOf('/') is var i && i >= 0 ? i : l.Length)..].Trim())
            .First(path => path.Contains("/libstdc++.so", StringComparison.Ordinal));
        bool hasVersion = ElfSymbolVersions.Read(stdcxx).Definitions.Contains("GLIBCXX_3.4.32");
        var description = NativeLibraries.Describe();
        Assert.Equal(!hasVersion, description.Contains("patched copy"));

        // The shipped file keeps its strict version need: only the cached copy is changed.
        var shipped = ElfSymbolVersions.Read(BridgePath()).Needs.Single(n => n.Name == "GLIBCXX_3.4.32");
        Assert.Equal(0, shipped.Flags & ElfSymbolVersions.VerFlagWeak);
    }

    [Fact]
    public void Weaken_changes_exactly_the_version_flag_and_the_symbol_version()
    {
        var bridge = BridgePath();
        var original = File.ReadAllBytes(bridge);
        var versions = ElfSymbolVersions.Parse(original, bridge);
        var need = Assert.Single(versions.Needs, n => n.Name == "GLIBCXX_3.4.32");
        Assert.Equal("libstdc++.so.6", need.File);
        var bound = Assert.Single(versions.Symbols, s => s.VersionIndex == need.Index);
        Assert.Equal("_ZSt21ios_base_library_initv", bound.Name);

        var patched = (byte[])original.Clone();
        int changed = versions.Weaken(patched, [need], new HashSet<string> { bound.Name }, bridge);

        Assert.Equal(2, changed);
        Assert.Equal(2, original.Zip(patched).Count(p => p.First != p.Second));
        var after = ElfSymbolVersions.Parse(patched, "patched");
        var weakNeed = Assert.Single(after.Needs, n => n.Name == "GLIBCXX_3.4.32");
        Assert.Equal(ElfSymbolVersions.VerFlagWeak, weakNeed.Flags & ElfSymbolVersions.VerFlagWeak);
        Assert.DoesNotContain(after.Symbols, s => s.Name == bound.Name);
        Assert.Equal(versions.Symbols.Count - 1, after.Symbols.Count);
    }

    [Fact]
    public void Weaken_refuses_a_version_that_symbols_in_use_depend_on()
    {
        var bridge = BridgePath();
        var bytes = File.ReadAllBytes(bridge);
        var versions = ElfSymbolVersions.Parse(bytes, bridge);
        // Many libstdc++ symbols the bridge really calls are bound to GLIBCXX_3.4.
        var used = Assert.Single(versions.Needs, n => n.Name == "GLIBCXX_3.4");
        var error = Assert.Throws<InvalidOperationException>(() =>
            versions.Weaken(bytes, [used], new HashSet<string>(), bridge));
        Assert.Contains("GLIBCXX_3.4 from libstdc++.so.6", error.Message);
    }

    [Fact]
    public void Parse_rejects_a_file_that_is_not_ELF()
    {
        var error = Assert.Throws<InvalidDataException>(() => ElfSymbolVersions.Parse(new byte[100], "zeros.so"));
        Assert.Contains("zeros.so", error.Message);
    }

    static string BridgePath()
    {
        foreach (var dir in new[] { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native") })
        {
            var path = Path.Combine(dir, "libLibTorchSharp.so");
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException($"libLibTorchSharp.so not found under {AppContext.BaseDirectory}");
    }
}
