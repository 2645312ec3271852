using Anneal.Cli.Env;

namespace Anneal.Cli.Tests.Env;

public class CliEnvironmentTests
{
    static (CliEnvironment? Env, List<string> Errors) Load(CliSandbox box, params string[] envFiles) =>
        CliEnvironment.Load(CliContext.Captured(TextWriter.Null, TextWriter.Null, box.Dir, box.Environment), envFiles);

    [Fact]
    public void Env_files_layer_over_dotenv_in_order_and_the_process_environment_wins()
    {
        using var box = new CliSandbox();
        box.Write(".env", "A=dotenv\nB=dotenv\nC=dotenv\nD=dotenv\n");
        box.Write("one.env", "B=one\nC=one\n");
        box.Write("sub/two.env", "C=two\n");
        box.Environment["D"] = "process";
        var (env, errors) = Load(box, "one.env", "sub/two.env");
        Assert.Empty(errors);
        Assert.Equal("dotenv", env!.Get("A"));
        Assert.Equal("one", env.Get("B"));
        Assert.Equal("two", env.Get("C"));
        Assert.Equal("process", env.Get("D"));
        Assert.Equal(Path.Combine(box.Dir, "sub/two.env"), env.SourceOf("C"));
    }

    [Fact]
    public void A_missing_env_file_is_an_error_naming_it()
    {
        using var box = new CliSandbox();
        var (env, errors) = Load(box, "nope.env");
        Assert.Null(env);
        Assert.Contains($"--env-file nope.env: file not found ({Path.Combine(box.Dir, "nope.env")})", errors);
    }

    [Theory]
    [InlineData("http://h:1", null, null, "http://h:1/api")]
    [InlineData(null, "http://base:2/", "http://legacy:3", "http://base:2/api")]
    [InlineData(null, null, "http://legacy:3/api", "http://legacy:3/api")]
    [InlineData(null, null, null, "http://127.0.0.1:8000/api")]
    public void Backend_comes_from_the_flag_then_BACKEND_BASE_URL_then_SYNTH_BACKEND_URL(string? flag, string? baseUrl, string? legacy, string expected)
    {
        using var box = new CliSandbox();
        if (baseUrl is not null) box.Environment["BACKEND_BASE_URL"] = baseUrl;
        if (legacy is not null) box.Environment["SYNTH_BACKEND_URL"] = legacy;
        Assert.Equal(expected, Load(box).Env!.BackendBaseUrl(flag));
    }

    [Fact]
    public void A_backend_that_is_not_an_http_url_is_rejected()
    {
        Assert.NotNull(CliEnvironment.CheckBackendUrl("localhost:8000/api"));
        Assert.Null(CliEnvironment.CheckBackendUrl("https://example.com/api"));
    }
}
