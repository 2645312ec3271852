// `anneal keys list|revoke` on a local data folder (revocation is effective for a running server
// at its next request) and the permissions of what `anneal setup` writes: .env holds a plaintext
// key and is readable by its owner only.
namespace Anneal.Cli.Tests.Setup;

public class KeysAndPermissionsTests
{
    [SqliteFact("checks the mode of the SQLite file `anneal setup` creates in a new folder")]
    public async Task Setup_writes_dotenv_and_the_data_folder_for_their_owner_only()
    {
        if (OperatingSystem.IsWindows()) return;
        using var box = new CliSandbox();
        File.WriteAllText(Path.Combine(box.Dir, ".env"), "OTHER=1\n");
        File.SetUnixFileMode(Path.Combine(box.Dir, ".env"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        var result = await box.RunAsync("setup", "--data-dir", "data");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(box.Dir, ".env")));
        Assert.Contains("OTHER=1", File.ReadAllText(Path.Combine(box.Dir, ".env")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(box.Dir, "data")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(box.Dir, "data", "anneal.db")));
    }

    [Fact]
    public async Task Keys_are_listed_by_id_and_a_revoked_key_is_refused_at_once_by_a_running_server()
    {
        using var box = new CliSandbox();
        var dataDir = Path.Combine(box.Dir, "data");
        await using var server = await TestServer.StartAsync(dataDir: dataDir);
        var created = await box.RunAsync("keys", "create", "--org", "acme", "--data-dir", "data");
        Assert.True(created.ExitCode == 0, created.ToString());
        var key = created.Out.Trim();

        var list = await box.RunAsync("keys", "list", "--org", "acme", "--data-dir", "data");
        Assert.True(list.ExitCode == 0, list.ToString());
        var row = Assert.Single(list.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1));
        Assert.DoesNotContain(key, list.Out);
        var id = row.Split(' ')[0];
        Assert.StartsWith("key_", id);
        Assert.Contains("acme", row);
        var all = await box.RunAsync("keys", "list", "--all", "--data-dir", "data");
        Assert.Contains("default", all.Out);

        box.Environment["SYNTH_API_KEY"] = key;
        Assert.Equal(0, (await box.RunAsync("jobs", "list", "--backend", server.BaseUrl)).ExitCode);
        var revoked = await box.RunAsync("keys", "revoke", id, "--data-dir", "data");
        Assert.True(revoked.ExitCode == 0, revoked.ToString());
        var refused = await box.RunAsync("jobs", "list", "--backend", server.BaseUrl);
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("rejected the API key (401", refused.Err);

        var again = await box.RunAsync("keys", "revoke", id, "--data-dir", "data");
        Assert.Equal(2, again.ExitCode);
        Assert.Contains($"no API key with id '{id}'", again.Err);
        var nowhere = await box.RunAsync("keys", "list", "--data-dir", "nowhere");
        Assert.Equal(2, nowhere.ExitCode);
        Assert.Contains("no server data folder there (neither anneal.db nor database.url)", nowhere.Err);
        Assert.False(Directory.Exists(Path.Combine(box.Dir, "nowhere")));
    }
}
