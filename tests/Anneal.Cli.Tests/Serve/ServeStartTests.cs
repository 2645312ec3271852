// `anneal serve` on an address or a data folder that another server holds: one line naming the
// problem, exit 2, no stack trace.
namespace Anneal.Cli.Tests.Serve;

public class ServeStartTests
{
    [Fact]
    public async Task A_port_in_use_is_one_line_and_exit_2()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        var result = await box.RunAsync(["serve", "--urls", server.BaseUrl, "--data-dir", "other-data", .. TestStore.ServeOptions(Path.Combine(box.Dir, "other-data"))]);
        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains("already in use", lines[0]);
        Assert.Contains("--urls", lines[0]);
        Assert.DoesNotContain("   at ", result.Out + result.Err);
    }

    [SqliteFact("the data-folder lock guards the SQLite store; servers on one PostgreSQL database share their folder")]
    public async Task A_data_folder_in_use_is_one_line_and_exit_2()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        var result = await box.RunAsync("serve", "--urls", "http://127.0.0.1:0", "--data-dir", server.DataDir);
        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.Contains($"data folder {server.DataDir} is in use", lines[0]);
        Assert.DoesNotContain("   at ", result.Out + result.Err);
        // The running server is untouched.
        Assert.Equal(0, await server.JobCountAsync());
    }
}
