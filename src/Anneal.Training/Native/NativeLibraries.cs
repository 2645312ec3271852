// Loads libtorch and TorchSharp's native bridge (libLibTorchSharp.so) before TorchSharp probes for
// them, so that the trainer runs on machines TorchSharp's own probe fails on:
//
// 1. Debian 12 (libstdc++ up to GLIBCXX_3.4.30): TorchSharp 0.107's bridge needs GLIBCXX_3.4.32 for
//    one symbol it never calls. Only when the running libstdc++ lacks a needed version, a copy of the
//    bridge is patched (ElfSymbolVersions.Weaken, two bytes) into a cache folder and loaded from there.
//    The NuGet cache and the app folder are never modified.
// 2. GPU machines: a bundle published with -p:AnnealGpu=true ships no libtorch. libtorch is taken from
//    ANNEAL_LIBTORCH_DIR, else from the installed PyTorch (`python3 -c "import torch"`).
//
// TorchSharp binds its P/Invokes with [DllImport("LibTorchSharp")]; a DllImportResolver on its assembly
// hands back the handles loaded here (libLibTorchSharp.so finds libtorch*.so by soname, already loaded).
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;

namespace Anneal.Training.Native;

public static class NativeLibraries
{
    const string BridgeFile = "libLibTorchSharp.so";
    const string LibtorchDirVariable = "ANNEAL_LIBTORCH_DIR";
    const string PythonTorchLib = "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')";

    // Symbols the bridge binds to a too-new libstdc++ version but never calls (see file header).
    static readonly HashSet<string> UncalledSymbols = ["_ZSt21ios_base_library_initv"];

    // libtorch in dependency order; the CUDA ones exist only in a CUDA libtorch.
    static readonly string[] RequiredLibtorch = ["libc10.so", "libtorch_cpu.so"];
    static readonly string[] CudaLibtorch = ["libc10_cuda.so", "libtorch_cuda.so"];

    static readonly object Gate = new();
    static readonly List<string> Trace = [];
    // DllImport name without "lib" and ".so" (e.g. "LibTorchSharp", "torch_cuda") → handle.
    static readonly Dictionary<string, IntPtr> Handles = new(StringComparer.Ordinal);
    static bool loaded;
    static Exception? failure;

    /// <summary>The folder libtorch was loaded from, once loaded.</summary>
    public static string? LibtorchDirectory { get; private set; }

    /// <summary>True when the loaded libtorch has CUDA libraries (libtorch_cuda.so).</summary>
    public static bool HasCudaLibraries { get; private set; }

    /// <summary>
    /// Makes TorchSharp usable: loads libtorch and the (patched if needed) bridge, then initialises
    /// TorchSharp's CPU backend. Idempotent and thread-safe; throws the same error again after a failure.
    /// </summary>
    public static void EnsureTorchLoaded()
    {
        lock (Gate)
        {
            if (loaded) return;
            if (failure is not null) throw new InvalidOperationException(failure.Message, failure);
            try
            {
                if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64)
                    LoadLinux();
                else
                    Note($"{RuntimeInformation.OSDescription} {RuntimeInformation.ProcessArchitecture}: left to TorchSharp's own probe");
                torch.InitializeDeviceType(DeviceType.CPU);
                Note($"TorchSharp initialised (libtorch {torch.__version__})");
                loaded = true;
            }
            catch (Exception e)
            {
                Note($"failed: {e.GetType().Name}: {FirstLine(e.Message)}");
                failure = new InvalidOperationException(
                    $"Could not load libtorch for TorchSharp. {FirstLine(e.Message)}\nWhat was tried:\n{DescribeUnlocked()}", e);
                throw failure;
            }
        }
    }

    /// <summary>What was found and tried, one step per line (for logs and error messages).</summary>
    public static string Describe()
    {
        lock (Gate) return DescribeUnlocked();
    }

    static string DescribeUnlocked() => Trace.Count == 0 ? "  (nothing tried yet)" : string.Join('\n', Trace.Select(t => "  " + t));

    static void LoadLinux()
    {
        var searchDirs = SearchDirectories();
        var bridgeDir = searchDirs.FirstOrDefault(d => File.Exists(Path.Combine(d, BridgeFile)))
            ?? throw new FileNotFoundException($"{BridgeFile} not found in: {string.Join(", ", searchDirs)}. Is the TorchSharp package referenced?");
        var bridge = Path.Combine(bridgeDir, BridgeFile);
        Note($"bridge: {bridge}");

        var libtorchDir = FindLibtorch(searchDirs);
        LibtorchDirectory = libtorchDir;
        foreach (var name in RequiredLibtorch)
            Load(Path.Combine(libtorchDir, name), required: true);
        foreach (var name in CudaLibtorch)
            if (File.Exists(Path.Combine(libtorchDir, name)))
                HasCudaLibraries |= Load(Path.Combine(libtorchDir, name), required: false) && name == "libtorch_cuda.so";
        Load(Path.Combine(libtorchDir, "libtorch.so"), required: true);

        Load(PatchIfNeeded(bridge), required: true);
        InstallResolver();
    }

    /// <summary>Folders the runtime would search for TorchSharp's native files, in probe order.</summary>
    static List<string> SearchDirectories()
    {
        var dirs = new List<string>();
        void Add(string? d)
        {
            if (string.IsNullOrEmpty(d)) return;
            var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(d));
            if (!dirs.Contains(full) && Directory.Exists(full)) dirs.Add(full);
        }
        const string rid = "runtimes/linux-x64/native";
        Add(AppContext.BaseDirectory);
        Add(Path.Combine(AppContext.BaseDirectory, rid));
        var torchSharpDir = Path.GetDirectoryName(typeof(torch).Assembly.Location);
        Add(torchSharpDir);
        if (torchSharpDir is not null) Add(Path.Combine(torchSharpDir, rid));
        // Set by the host from the app's deps.json (NuGet cache folders when run from a build).
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string native)
            foreach (var d in native.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
                Add(d);
        return dirs;
    }

    static string FindLibtorch(List<string> searchDirs)
    {
        var configured = Environment.GetEnvironmentVariable(LibtorchDirVariable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            Note($"{LibtorchDirVariable}={configured}");
            if (!File.Exists(Path.Combine(configured, "libtorch_cpu.so")))
                throw new DirectoryNotFoundException($"{LibtorchDirVariable}={configured} does not contain libtorch_cpu.so (expected a libtorch lib folder, e.g. <site-packages>/torch/lib).");
            return Path.GetFullPath(configured);
        }
        var bundled = searchDirs.FirstOrDefault(d => File.Exists(Path.Combine(d, "libtorch_cpu.so")));
        if (bundled is not null)
        {
            Note($"libtorch: bundled in {bundled}");
            return bundled;
        }
        Note($"libtorch: none bundled (searched {string.Join(", ", searchDirs)}); {LibtorchDirVariable} not set; asking python3 for an installed PyTorch");
        var fromPython = AskPython();
        if (fromPython is not null && File.Exists(Path.Combine(fromPython, "libtorch_cpu.so")))
        {
            Note($"libtorch: PyTorch's {fromPython}");
            return fromPython;
        }
        throw new DirectoryNotFoundException(
            $"No libtorch found: none bundled with the application, {LibtorchDirVariable} not set, and python3 " +
            (fromPython is null ? "has no importable torch." : $"reported {fromPython}, which has no libtorch_cpu.so.") +
            $" Set {LibtorchDirVariable} to a libtorch lib folder or install PyTorch.");
    }

    static string? AskPython()
    {
        try
        {
            var psi = new ProcessStartInfo("python3", ["-c", PythonTorchLib])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromSeconds(120)))
            {
                p.Kill(entireProcessTree: true);
                Note("python3 -c \"import torch\": no answer within 120 s");
                return null;
            }
            if (p.ExitCode != 0)
            {
                var lines = stderr.Result.Trim().Split('\n');
                Note($"python3 -c \"import torch\": exit {p.ExitCode}: {lines[^1]}");
                return null;
            }
            return stdout.Result.Trim();
        }
        catch (Exception e)
        {
            Note($"python3: could not run ({FirstLine(e.Message)})");
            return null;
        }
    }

    /// <summary>The bridge itself when the running libstdc++ has every version it needs, else a patched copy.</summary>
    static string PatchIfNeeded(string bridge)
    {
        var original = File.ReadAllBytes(bridge);
        var versions = ElfSymbolVersions.Parse(original, bridge);
        var stdcxxNeeds = versions.Needs.Where(n => n.File == "libstdc++.so.6").ToList();
        if (stdcxxNeeds.Count == 0) return bridge;

        var stdcxx = RunningLibstdcxx();
        var defined = ElfSymbolVersions.Read(stdcxx).Definitions.ToHashSet(StringComparer.Ordinal);
        var missing = stdcxxNeeds.Where(n => !defined.Contains(n.Name)).ToList();
        if (missing.Count == 0)
        {
            Note($"libstdc++ {stdcxx} has every version the bridge needs: no patch");
            return bridge;
        }
        Note($"libstdc++ {stdcxx} lacks {string.Join(", ", missing.Select(m => m.Name))}: loading a patched copy");

        var patched = (byte[])original.Clone();
        int changed = versions.Weaken(patched, missing, UncalledSymbols, bridge);
        var hash = Convert.ToHexStringLower(SHA256.HashData(original))[..16];
        var tried = new List<string>();
        foreach (var root in CacheRoots())
        {
            var dir = Path.Combine(root, hash);
            var target = Path.Combine(dir, BridgeFile);
            try
            {
                if (!File.Exists(target) || !File.ReadAllBytes(target).AsSpan().SequenceEqual(patched))
                {
                    Directory.CreateDirectory(dir);
                    // Write beside, then rename: another process may be loading the same file.
                    var temp = Path.Combine(dir, $"{BridgeFile}.{Environment.ProcessId}.tmp");
                    File.WriteAllBytes(temp, patched);
                    File.Move(temp, target, overwrite: true);
                }
                Note($"patched copy ({changed} bytes changed): {target}");
                return target;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                tried.Add($"{dir}: {e.Message}");
            }
        }
        throw new IOException($"Could not write the patched {BridgeFile} to any cache folder: {string.Join("; ", tried)}");
    }

    static IEnumerable<string> CacheRoots()
    {
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrEmpty(xdg)) yield return Path.Combine(xdg, "anneal", "native");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (!string.IsNullOrEmpty(home)) yield return Path.Combine(home, ".cache", "anneal", "native");
        yield return Path.Combine(Path.GetTempPath(), $"anneal-native-{Environment.UserName}");
    }

    /// <summary>Path of the libstdc++ this process uses (loads it first if nothing has yet).</summary>
    static string RunningLibstdcxx()
    {
        NativeLibrary.Load("libstdc++.so.6");
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash >= 0 && line.Contains("/libstdc++.so", StringComparison.Ordinal))
                return line[slash..].Trim();
        }
        throw new FileNotFoundException("libstdc++.so.6 is loaded but not listed in /proc/self/maps.");
    }

    static bool Load(string path, bool required)
    {
        if (NativeLibrary.TryLoad(path, out var handle))
        {
            var file = Path.GetFileName(path);
            var key = file.StartsWith("lib", StringComparison.Ordinal) ? file[3..] : file;
            Handles[key.EndsWith(".so", StringComparison.Ordinal) ? key[..^3] : key] = handle;
            Note($"loaded {path}");
            return true;
        }
        // TryLoad hides dlerror(); Load reports it (missing dependency, version, ...).
        string reason;
        try { NativeLibrary.Load(path); reason = "loaded on retry"; }
        catch (Exception e) { reason = e.Message; }
        Note($"could not load {path}: {reason}");
        if (required) throw new DllNotFoundException($"Could not load {path}: {reason}");
        return false;
    }

    static void InstallResolver()
    {
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
            Note("TorchSharp's DllImport(\"LibTorchSharp\") resolves to the library loaded above");
        }
        catch (InvalidOperationException)
        {
            // Someone else set a resolver; TorchSharp's probe then loads by name. The bridge's soname is
            // already loaded, so a bare-name dlopen still finds it, but a full-path probe may not.
            Note("a DllImportResolver was already set on TorchSharp; relying on soname matching");
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        var key = name.StartsWith("lib", StringComparison.Ordinal) && name != "LibTorchSharp" ? name[3..] : name;
        if (key.EndsWith(".so", StringComparison.Ordinal)) key = key[..^3];
        // Handles is complete before the resolver is installed and never changes afterwards.
        return Handles.TryGetValue(key, out var handle) ? handle : IntPtr.Zero;
    }

    static void Note(string line) => Trace.Add(line);

    static string FirstLine(string message)
    {
        int nl = message.IndexOf('\n');
        return nl < 0 ? message : message[..nl];
    }
}
