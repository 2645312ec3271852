// Command-line mistakes in the user's words: "unknown command 'trian'; did you mean 'train'?",
// "--examples abc: expected a whole number". The parser's own texts name .NET types, report a
// missing command next to a misspelt one, and count an unknown option's value as a second error.
using System.CommandLine;
using System.Text.RegularExpressions;
using Anneal.Core;

namespace Anneal.Cli;

public static partial class ParseErrors
{
    public static void Print(ParseResult result, TextWriter error)
    {
        var command = result.CommandResult.Command;
        var unmatched = result.UnmatchedTokens;
        for (var i = 0; i < unmatched.Count; i++)
        {
            var token = unmatched[i];
            if (token.StartsWith('-'))
            {
                var names = command.Options.Where(o => !o.Hidden).SelectMany(o => o.Aliases.Prepend(o.Name)).ToList();
                error.WriteLine($"error: unknown option '{token}'{Suggest.DidYouMean(token, names)}");
                // `--datset file.jsonl`: the file is the unknown option's value, not a second mistake.
                if (i + 1 < unmatched.Count && !unmatched[i + 1].StartsWith('-')) i++;
            }
            else if (command.Subcommands.Count > 0)
                error.WriteLine($"error: unknown command '{token}'{Suggest.DidYouMean(token, command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name))}");
            else
                error.WriteLine($"error: unexpected argument '{token}'");
        }
        foreach (var e in result.Errors)
        {
            if (e.Message.StartsWith("Unrecognized command or argument", StringComparison.Ordinal)) continue;
            // A misspelt command was reported above; "Required command was not provided" would only confuse.
            if (unmatched.Count > 0 && e.Message.StartsWith("Required command was not provided", StringComparison.Ordinal)) continue;
            error.WriteLine($"error: {Rewrite(e.Message)}");
        }
    }

    /// <summary>"Cannot parse argument 'abc' for option '--examples' as expected type 'System.Nullable`1[System.Int32]'." → "--examples abc: expected a whole number".</summary>
    public static string Rewrite(string message)
    {
        var m = CannotParse().Match(message);
        if (!m.Success) return message;
        var type = m.Groups["type"].Value;
        var expected = type.Contains("Int", StringComparison.Ordinal) ? "a whole number"
            : type.Contains("Double", StringComparison.Ordinal) || type.Contains("Single", StringComparison.Ordinal) || type.Contains("Decimal", StringComparison.Ordinal) ? "a number"
            : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false"
            : "a different value";
        return $"{m.Groups["option"].Value} {m.Groups["value"].Value}: expected {expected}";
    }

    [GeneratedRegex(@"^Cannot parse argument '(?<value>.*)' for (?:option|command|argument) '(?<option>[^']*)' as expected type '(?<type>[^']*)'")]
    private static partial Regex CannotParse();
}
