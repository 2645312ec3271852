using Anneal.Cli.Env;

namespace Anneal.Cli.Tests.Env;

public class DotEnvTests
{
    [Fact]
    public void Reads_plain_exported_quoted_and_commented_values()
    {
        var (values, errors) = DotEnv.Parse("""
            # comment
            A=1
            export B = two words # trailing comment
            C="quoted # not a comment \"x\"\n"
            D='single $literal'
            E=
            """, ".env");
        Assert.Empty(errors);
        Assert.Equal("1", values["A"]);
        Assert.Equal("two words", values["B"]);
        Assert.Equal("quoted # not a comment \"x\"\n", values["C"]);
        Assert.Equal("single $literal", values["D"]);
        Assert.Equal("", values["E"]);
    }

    [Fact]
    public void A_malformed_line_is_an_error_naming_file_and_line()
    {
        var (_, errors) = DotEnv.Parse("A=1\nthis is not an assignment\nB=\"unterminated\n", "/x/.env");
        Assert.Equal(2, errors.Count);
        Assert.Equal("/x/.env:2: expected KEY=VALUE, got 'this is not an assignment'", errors[0].ToString());
        Assert.Contains("/x/.env:3: B: missing closing \"", errors[1].ToString());
    }

    [Fact]
    public void Set_replaces_in_place_keeps_other_lines_and_round_trips()
    {
        var text = "# mine\nOTHER=keep\nSYNTH_API_KEY=old\n";
        var updated = DotEnv.Set(text, [new("SYNTH_API_KEY", "new key \"q\""), new("BACKEND_BASE_URL", "http://h:1")]);
        Assert.StartsWith("# mine\nOTHER=keep\nSYNTH_API_KEY=", updated);
        var (values, errors) = DotEnv.Parse(updated, ".env");
        Assert.Empty(errors);
        Assert.Equal("keep", values["OTHER"]);
        Assert.Equal("new key \"q\"", values["SYNTH_API_KEY"]);
        Assert.Equal("http://h:1", values["BACKEND_BASE_URL"]);
    }
}
