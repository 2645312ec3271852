// Every command has --help; unknown commands and options exit 2 with a message naming the token.
using System.CommandLine;

namespace Anneal.Cli.Tests.Commands;

public class ParsingTests
{
    static IEnumerable<string[]> CommandPaths(Command command, string[] prefix)
    {
        foreach (var sub in command.Subcommands)
        {
            string[] path = [.. prefix, sub.Name];
            // `anneal trainer` is hidden (only the server starts it); its `run` subcommand has help.
            if (!sub.Hidden) yield return path;
            foreach (var deeper in CommandPaths(sub, path)) yield return deeper;
        }
    }

    static List<string> CommandNames() =>
        CommandPaths(AnnealApp.Build(CliContext.Captured(TextWriter.Null, TextWriter.Null, Path.GetTempPath())), [])
            .Select(p => string.Join(' ', p)).ToList();

    public static TheoryData<string> AllCommands() => new(CommandNames());

    [Theory]
    [MemberData(nameof(AllCommands))]
    public async Task Every_command_has_help(string command)
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync([.. command.Split(' '), "--help"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($" {command} ", result.Out); // usage line: "<executable> jobs get <job-id> [options]"
        Assert.Contains("Description:", result.Out);
    }

    [Fact]
    public void The_command_tree_has_every_command_of_the_spec_and_design()
    {
        var names = CommandNames().ToHashSet();
        foreach (var expected in new[] { "train", "setup", "serve", "demo", "keys create", "jobs list", "jobs get", "jobs events", "jobs cancel",
                     "files upload", "files get", "files check", "models", "trainer run", "train-local", "tokenize", "generate" })
            Assert.Contains(expected, names);
    }

    [Fact]
    public async Task An_unknown_command_exits_2_with_a_suggestion()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("trian");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("unknown command 'trian'; did you mean 'train'?", result.Err);
        Assert.Contains("Run `anneal --help` for usage.", result.Err);
    }

    [Fact]
    public async Task An_unknown_option_exits_2_naming_it()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "x.toml", "--epochs", "3");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("error: unknown option '--epochs'", result.Err);
        Assert.Contains("anneal train --help", result.Err);
    }

    [Fact]
    public async Task Train_without_config_exits_2()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--type", "sft");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--config", result.Err);
    }

    [Fact]
    public async Task Train_type_other_than_sft_exits_2_with_a_message()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--type", "rl", "--config", "x.toml");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--type rl: only 'sft' is supported", result.Err);
    }

    [Theory]
    [InlineData("--examples", "0", "--examples 0: expected a positive number")]
    [InlineData("--poll-interval", "-1", "--poll-interval -1: expected a positive number")]
    [InlineData("--poll-timeout", "0", "--poll-timeout 0: expected a positive number")]
    public async Task Train_rejects_bad_numbers(string flag, string value, string message)
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "x.toml", flag, value);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Err);
    }

    [Fact]
    public async Task A_non_numeric_value_exits_2_naming_the_option()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "x.toml", "--examples", "ten");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("ten", result.Err);
    }

    [Fact]
    public async Task A_missing_config_file_exits_2_naming_the_path()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("train", "--config", "configs/train.toml");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"--config configs/train.toml: file not found ({Path.Combine(box.Dir, "configs/train.toml")})", result.Err);
    }
}
