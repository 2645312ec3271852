// `anneal setup` and `anneal keys create`: keys created in a local data folder work against a
// server on that folder; .env values are never replaced silently.
using Anneal.Cli.Env;
using Spectre.Console.Testing;

namespace Anneal.Cli.Tests.Setup;

public class SetupTests
{
    static Dictionary<string, string> ReadEnv(CliSandbox box)
    {
        var (values, errors) = DotEnv.Parse(File.ReadAllText(Path.Combine(box.Dir, ".env")), ".env");
        Assert.Empty(errors);
        return values;
    }

    [SqliteFact("`anneal setup --data-dir` on a new folder creates the SQLite store; a PostgreSQL folder is made by `anneal serve --database`")]
    public async Task Setup_for_a_local_server_writes_a_working_key_and_the_backend_to_dotenv()
    {
        using var box = new CliSandbox();
        var dataDir = Path.Combine(box.Dir, "data");
        var result = await box.RunAsync("setup", "--data-dir", "data");
        Assert.True(result.ExitCode == 0, result.ToString());
        var env = ReadEnv(box);
        Assert.StartsWith("ank_", env["SYNTH_API_KEY"]);
        Assert.Equal("http://127.0.0.1:8000", env["BACKEND_BASE_URL"]);
        Assert.DoesNotContain(env["SYNTH_API_KEY"], result.Out); // masked in the output

        // The key authenticates against a server on that data folder (backend overridden: port 0).
        await using var server = await TestServer.StartAsync(dataDir: dataDir);
        Assert.Equal("", server.ApiKey); // no "first key": setup made one already
        var jobs = await box.RunAsync("jobs", "list", "--backend", server.BaseUrl);
        Assert.True(jobs.ExitCode == 0, jobs.ToString());
        Assert.Contains("No jobs.", jobs.Out);
    }

    [Fact]
    public async Task Setup_does_not_suggest_starting_a_server_when_one_already_answers()
    {
        using var box = new CliSandbox();
        await using var server = await TestServer.StartAsync(dataDir: Path.Combine(box.Dir, "data"));
        var result = await box.RunAsync("setup", "--data-dir", "data", "--backend", server.BaseUrl);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("Start the server", result.Out);
        Assert.Contains($"A server is already running at {server.BaseUrl}", result.Out);
        var jobs = await box.RunAsync("jobs", "list");
        Assert.True(jobs.ExitCode == 0, jobs.ToString());
    }

    [Fact]
    public async Task Setup_with_a_data_dir_writes_the_port_that_folders_server_listens_on()
    {
        using var box = new CliSandbox();
        await using var server = await TestServer.StartAsync(dataDir: Path.Combine(box.Dir, "data"));
        Assert.DoesNotContain(":8000", server.BaseUrl); // a free port, not the default
        var result = await box.RunAsync("setup", "--data-dir", "data");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"BACKEND_BASE_URL={server.BaseUrl}", File.ReadAllText(Path.Combine(box.Dir, ".env")));
        var jobs = await box.RunAsync("jobs", "list");
        Assert.True(jobs.ExitCode == 0, jobs.ToString());
    }

    [Fact]
    public async Task Setup_suggests_starting_a_server_when_none_answers()
    {
        using var box = new CliSandbox();
        // A loopback port that was free a moment ago: nothing answers there.
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var result = await box.RunAsync("setup", "--data-dir", "data", "--backend", $"http://127.0.0.1:{port}");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("Start the server with `anneal serve --data-dir data`", result.Out);
        Assert.DoesNotContain("already running", result.Out);
    }

    [Fact]
    public async Task Setup_without_a_terminal_refuses_to_overwrite_an_existing_key()
    {
        using var box = new CliSandbox();
        box.Write(".env", "# my settings\nSYNTH_API_KEY=ank_old\nOTHER=1\n");
        var result = await box.RunAsync("setup", "--data-dir", "data");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("already sets SYNTH_API_KEY", result.Err);
        Assert.Contains("--force", result.Err);
        Assert.Equal("# my settings\nSYNTH_API_KEY=ank_old\nOTHER=1\n", File.ReadAllText(Path.Combine(box.Dir, ".env")));
        Assert.False(Directory.Exists(Path.Combine(box.Dir, "data"))); // refused before creating a key
    }

    [Fact]
    public async Task Setup_with_force_replaces_the_key_and_keeps_other_lines()
    {
        using var box = new CliSandbox();
        box.Write(".env", "# my settings\nSYNTH_API_KEY=ank_old\nOTHER=1\n");
        var result = await box.RunAsync("setup", "--api-key", "ank_remote", "--backend", "https://anneal.example.com", "--force");
        Assert.True(result.ExitCode == 0, result.ToString());
        var text = File.ReadAllText(Path.Combine(box.Dir, ".env"));
        Assert.StartsWith("# my settings\nSYNTH_API_KEY=ank_remote\nOTHER=1\n", text);
        Assert.Equal("https://anneal.example.com", ReadEnv(box)["BACKEND_BASE_URL"]);
    }

    [Fact]
    public async Task Setup_for_a_remote_writes_the_given_key_and_backend_and_is_idempotent()
    {
        using var box = new CliSandbox();
        string[] args = ["setup", "--api-key", "ank_remote", "--backend", "https://anneal.example.com"];
        Assert.Equal(0, (await box.RunAsync(args)).ExitCode);
        var again = await box.RunAsync(args); // same values: nothing to overwrite, no question
        Assert.True(again.ExitCode == 0, again.ToString());
        var env = ReadEnv(box);
        Assert.Equal("ank_remote", env["SYNTH_API_KEY"]);
        Assert.Equal("https://anneal.example.com", env["BACKEND_BASE_URL"]);
    }

    [Theory]
    [InlineData("--backend", "not a url", "--backend: backend URL 'not a url' is not an absolute")]
    [InlineData("--api-key", "two words", "--api-key: the key must be a single word")]
    public async Task Setup_rejects_bad_values(string flag, string value, string message)
    {
        using var box = new CliSandbox();
        string[] other = flag == "--backend" ? ["--api-key", "ank_x"] : [];
        var result = await box.RunAsync(["setup", flag, value, .. other]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Err);
        Assert.False(File.Exists(Path.Combine(box.Dir, ".env")));
    }

    [Fact]
    public async Task Setup_refuses_to_rewrite_a_dotenv_it_cannot_read()
    {
        using var box = new CliSandbox();
        box.Write(".env", "GOOD=1\nthis line is broken\n");
        var result = await box.RunAsync("setup", "--api-key", "ank_x");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(".env:2: expected KEY=VALUE", result.Err);
    }

    [Fact]
    public async Task Keys_create_prints_the_key_alone_and_it_works()
    {
        using var box = new CliSandbox();
        await using var server = await TestServer.StartAsync();
        await server.Server.DisposeAsync(); // keys are created in the data folder, the server need not run
        var result = await box.RunAsync("keys", "create", "--org", "acme", "--data-dir", server.DataDir);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches(@"^ank_\S+\n$", result.Out.Replace("\r\n", "\n"));

        await using var restarted = await TestServer.StartAsync(dataDir: server.DataDir);
        box.Environment["SYNTH_API_KEY"] = result.Out.Trim();
        var jobs = await box.RunAsync("jobs", "list", "--backend", restarted.BaseUrl, "--json");
        Assert.True(jobs.ExitCode == 0, jobs.ToString());
    }

    [Fact]
    public async Task Keys_create_rejects_an_empty_org()
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("keys", "create", "--org", " ", "--data-dir", "data");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--org", result.Err);
    }
}

/// <summary>At a terminal, setup asks before replacing a value (Spectre's test console answers).</summary>
public class SetupAtATerminalTests
{
    static async Task<(int Code, string Text)> RunAtTerminalAsync(CliSandbox box, string answer)
    {
        var console = new TestConsole().Interactive();
        console.Input.PushTextWithEnter(answer);
        var output = new StringWriter();
        var error = new StringWriter();
        var ctx = new CliContext
        {
            Out = output, Error = error, Console = console, IsTerminal = true, WorkingDirectory = box.Dir,
            Environment = new Dictionary<string, string>(),
        };
        var code = await AnnealApp.RunAsync(["setup", "--api-key", "ank_new", "--backend", "http://h:1"], ctx);
        return (code, console.Output + output + error);
    }

    [Fact]
    public async Task Answering_no_leaves_the_file_unchanged()
    {
        using var box = new CliSandbox();
        box.Write(".env", "SYNTH_API_KEY=ank_old\n");
        var (code, text) = await RunAtTerminalAsync(box, "n");
        Assert.Equal(2, code);
        Assert.Contains("already sets SYNTH_API_KEY. Replace it?", text);
        Assert.Equal("SYNTH_API_KEY=ank_old\n", File.ReadAllText(Path.Combine(box.Dir, ".env")));
    }

    [Fact]
    public async Task Answering_yes_replaces_the_value()
    {
        using var box = new CliSandbox();
        box.Write(".env", "SYNTH_API_KEY=ank_old\n");
        var (code, text) = await RunAtTerminalAsync(box, "y");
        Assert.True(code == 0, text);
        Assert.Equal("SYNTH_API_KEY=ank_new\nBACKEND_BASE_URL=http://h:1\n", File.ReadAllText(Path.Combine(box.Dir, ".env")));
    }
}
