using Anneal.Core.Traces;

namespace Anneal.Core.Tests.Traces;

public class TraceScoringTests
{
    [Theory]
    [InlineData("4", "4")]
    [InlineData("  The answer\n is   4 ", "The answer is 4")]
    [InlineData("<think>\nadd them\n</think>\n\n4", "4")]
    public void Equal_answers_after_whitespace_normalising_score_one(string completion, string expected) =>
        Assert.Equal(1.0, TraceScoring.Score(completion, expected));

    [Fact]
    public void No_expected_answer_gives_no_score() => Assert.Null(TraceScoring.Score("anything", null));

    [Fact]
    public void Partial_overlap_is_the_token_f1()
    {
        // answer tokens [the, capital, is, paris] vs expected [paris]: P = 1/4, R = 1, F1 = 0.4.
        Assert.Equal(0.4, TraceScoring.Score("The capital is Paris.", "Paris")!.Value, 10);
        // Case and punctuation do not matter to the F1, only to the exact match.
        Assert.Equal(1.0, TraceScoring.Score("paris!", "Paris")!.Value, 10);
        // Repeated tokens count once per occurrence in the reference: [a, a, a] vs [a, b] → P 1/3, R 1/2.
        Assert.Equal(0.4, TraceScoring.TokenF1("a a a", "a b"), 10);
    }

    [Theory]
    [InlineData("5", "4")]
    [InlineData("", "4")]
    [InlineData("...", "4")]
    [InlineData("<think>4", "4")] // an unfinished reasoning block has no answer
    public void Unrelated_or_empty_answers_score_zero(string completion, string expected) =>
        Assert.Equal(0.0, TraceScoring.Score(completion, expected));

    [Fact]
    public void Tokens_are_lower_cased_letter_and_digit_runs() =>
        Assert.Equal(["héllo", "world", "42", "x"], TraceScoring.Tokens("Héllo, WORLD! 42-x"));
}
