namespace Anneal.Core.Tests;

public class SuggestTests
{
    [Theory]
    [InlineData("learnig_rate", "learning_rate")]
    [InlineData("N_EPOCHS", "n_epochs")]
    [InlineData("per_device_bach", "per_device_batch")]
    public void Close_typos_find_the_intended_name(string input, string expected) =>
        Assert.Equal(expected, Suggest.Closest(input, ["learning_rate", "n_epochs", "per_device_batch"]));

    [Fact]
    public void Unrelated_names_get_no_suggestion()
    {
        Assert.Null(Suggest.Closest("banana", ["learning_rate", "n_epochs"]));
        Assert.Equal("", Suggest.DidYouMean("banana", ["learning_rate"]));
    }

    [Theory]
    [InlineData("", "abc", 3)]
    [InlineData("kitten", "sitting", 3)]
    [InlineData("same", "same", 0)]
    public void Distance_is_levenshtein(string a, string b, int expected) =>
        Assert.Equal(expected, Suggest.Distance(a, b));
}
