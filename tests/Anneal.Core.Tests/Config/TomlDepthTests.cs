// Deeply nested TOML (arrays, inline tables, dotted keys, table headers) is a located config
// error, never an exception from the parser or the JSON conversion.
using Anneal.Core.Config;

namespace Anneal.Core.Tests.Config;

public class TomlDepthTests
{
    const string Job = "[job]\nmodel = \"anneal/tiny-qwen3\"\n[hyperparameters]\nn_epochs = 1\n";

    [Theory]
    [InlineData(70, "array")]
    [InlineData(5000, "array")]
    [InlineData(70, "inline")]
    [InlineData(70, "dotted")]
    [InlineData(70, "header")]
    public void Nesting_deeper_than_the_limit_is_a_located_error(int depth, string kind)
    {
        var toml = kind switch
        {
            "array" => Job + "[tags]\nx = " + new string('[', depth) + new string(']', depth) + "\n",
            "inline" => Job + "[tags]\nx = " + string.Concat(Enumerable.Repeat("{a = ", depth)) + "1" + new string('}', depth) + "\n",
            "dotted" => Job + "[tags]\n" + string.Join('.', Enumerable.Repeat("a", depth)) + " = 1\n",
            _ => Job + "[" + string.Join('.', Enumerable.Repeat("a", depth)) + "]\nb = 1\n",
        };
        var (config, errors) = TrainingConfigLoader.Parse(toml, "train.toml");
        Assert.Null(config);
        var e = Assert.Single(errors);
        Assert.True(e.Message.Contains("nested deeper than 32 levels"), e.ToString());
        Assert.StartsWith("train.toml", e.ToString());
        if (kind is "array" or "inline") Assert.Equal(6, e.Line);
    }

    [Fact]
    public void Brackets_inside_strings_and_comments_do_not_count()
    {
        var deep = new string('[', 100);
        var toml = Job + $"# {deep}\n[tags]\nnote = \"{deep}\"\nother = '{deep}'\nlong = \"\"\"\n{deep}\n\"\"\"\n";
        Assert.Null(TomlDepth.TooDeepLine(toml));
    }
}
