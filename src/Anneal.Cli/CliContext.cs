// What a command needs from the outside world, passed in so that every action can run in a test
// with captured writers, a fake environment and a temporary working directory.
using System.Collections;
using Spectre.Console;

namespace Anneal.Cli;

public sealed class CliContext
{
    /// <summary>Standard output: results (job ids, keys, JSON) go here.</summary>
    public required TextWriter Out { get; init; }
    /// <summary>Standard error: errors, warnings and hints.</summary>
    public required TextWriter Error { get; init; }
    /// <summary>Standard input (for `anneal tokenize`).</summary>
    public TextReader In { get; init; } = TextReader.Null;
    /// <summary>Rich rendering over <see cref="Out"/> (live progress, tables, prompts).</summary>
    public required IAnsiConsole Console { get; init; }
    /// <summary>True when a person is at a terminal: live progress and (for setup) prompts.</summary>
    public bool IsTerminal { get; init; }
    public required string WorkingDirectory { get; init; }
    /// <summary>The process environment; it wins over .env files.</summary>
    public required IReadOnlyDictionary<string, string> Environment { get; init; }
    /// <summary>How this executable is started again (trainer processes, `anneal generate` for the demo).</summary>
    public IReadOnlyList<string> SelfCommand { get; init; } = SelfCommandOfThisProcess();

    public static CliContext FromProcess()
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in System.Environment.GetEnvironmentVariables())
            if (e.Key is string k && e.Value is string v) env[k] = v;
        var terminal = !System.Console.IsOutputRedirected && !System.Console.IsErrorRedirected;
        // COLUMNS (set by the user, or exported by the shell) wins over the detected width.
        if (env.TryGetValue("COLUMNS", out var columns) && int.TryParse(columns, out var width) && width > 0)
            AnsiConsole.Console.Profile.Width = width;
        return new CliContext
        {
            Out = System.Console.Out,
            Error = System.Console.Error,
            In = System.Console.In,
            Console = AnsiConsole.Console,
            IsTerminal = terminal,
            WorkingDirectory = Directory.GetCurrentDirectory(),
            Environment = env,
        };
    }

    /// <summary>A context writing into the given writers, with no terminal and no ANSI codes.</summary>
    public static CliContext Captured(TextWriter output, TextWriter error, string workingDirectory,
        IReadOnlyDictionary<string, string>? environment = null, TextReader? input = null)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 160;
        return new CliContext
        {
            Out = output,
            Error = error,
            In = input ?? TextReader.Null,
            Console = console,
            IsTerminal = false,
            WorkingDirectory = workingDirectory,
            Environment = environment ?? new Dictionary<string, string>(),
        };
    }

    /// <summary>A path given by the user, relative to the working directory.</summary>
    public string FullPath(string path) => Path.GetFullPath(path, WorkingDirectory);

    /// <summary>
    /// This executable as a command prefix: the apphost itself (e.g. /usr/local/bin/anneal), or
    /// [dotnet, .../anneal.dll] when running under the dotnet host (`dotnet anneal.dll`, tests).
    /// </summary>
    public static IReadOnlyList<string> SelfCommandOfThisProcess()
    {
        var processPath = System.Environment.ProcessPath ?? "dotnet";
        var dll = typeof(CliContext).Assembly.Location;
        var host = Path.GetFileNameWithoutExtension(processPath);
        return string.Equals(host, "dotnet", StringComparison.OrdinalIgnoreCase) || host.StartsWith("testhost", StringComparison.OrdinalIgnoreCase)
            ? [DotnetHost(processPath), dll]
            : [processPath];
    }

    // Under the test host ProcessPath is testhost, which cannot run anneal.dll; find dotnet instead.
    static string DotnetHost(string processPath)
    {
        if (Path.GetFileNameWithoutExtension(processPath).Equals("dotnet", StringComparison.OrdinalIgnoreCase)) return processPath;
        var root = System.Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        // The runtime lives in <dotnet root>/shared/Microsoft.NETCore.App/<version>/.
        var runtimeDir = Path.GetDirectoryName(typeof(object).Assembly.Location);
        var candidate = runtimeDir is null ? null : Path.GetFullPath(Path.Combine(runtimeDir, "..", "..", "..", "dotnet"));
        return candidate is not null && File.Exists(candidate) ? candidate : "dotnet";
    }
}
