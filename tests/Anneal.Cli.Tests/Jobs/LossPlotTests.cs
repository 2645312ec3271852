// `anneal jobs get --plot`: the terminal loss plot (pure rendering), and the console links the CLI prints.
using Anneal.Cli.Jobs;

namespace Anneal.Cli.Tests.Jobs;

public class LossPlotTests
{
    static List<(long, double)> Falling(int steps) => Enumerable.Range(1, steps).Select(s => ((long)s, 5.0 - 3.0 * s / steps)).ToList();

    [Fact]
    public void A_falling_loss_starts_top_left_and_ends_bottom_right_with_its_range_on_the_axis()
    {
        var lines = LossPlot.Render(Falling(40), [], width: 60, height: 8);
        Assert.Equal(8 + 3, lines.Count);
        Assert.StartsWith("4.925 ┤*", lines[0]);
        Assert.StartsWith("2.000 ┤", lines[7]);
        Assert.EndsWith("*", lines[7]);
        Assert.Contains("└", lines[8]);
        Assert.Matches(@"^\s+1\s+40 step$", lines[9]);
        Assert.Equal("* train.loss (40 points, last 2.000)", lines[10].Trim());
        Assert.All(lines, l => Assert.True(l.Length <= 60, $"'{l}' is {l.Length} wide"));
    }

    [Fact]
    public void Thousands_of_steps_fit_the_width_one_mark_per_column()
    {
        var lines = LossPlot.Render(Falling(5000), [], width: 80, height: 10);
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"'{l}' is {l.Length} wide"));
        var marks = lines.Take(10).Sum(l => l.Count(c => c == '*'));
        Assert.InRange(marks, 60, 80);
        Assert.Contains("5000 points", lines[^1]);
    }

    [Fact]
    public void Validation_points_are_drawn_as_o_and_named_in_the_legend()
    {
        var lines = LossPlot.Render(Falling(20), [(10, 4.5), (20, 4.0)], width: 50, height: 6);
        Assert.Equal(2, lines.Take(6).Sum(l => l.Count(c => c == 'o')));
        Assert.Contains("o val.loss (2 points, last 4.000)", lines[^1]);
    }

    [Fact]
    public void No_points_and_a_flat_loss_are_stated_not_crashed_on()
    {
        Assert.Equal(["No loss recorded yet."], LossPlot.Render([], []));
        var flat = LossPlot.Render([(1, 2.0), (2, 2.0)], [], width: 40, height: 5);
        Assert.Contains(flat, l => l.Contains('*'));
        var one = LossPlot.Render([(7, 3.25)], [], width: 40, height: 5);
        Assert.Single(one.Take(5), l => l.Contains('*'));
    }

    [Theory]
    [InlineData("http://127.0.0.1:8000/api", "http://127.0.0.1:8000/#/jobs/job_1")]
    [InlineData("http://127.0.0.1:8000/api/", "http://127.0.0.1:8000/#/jobs/job_1")]
    [InlineData("https://tune.example.org/anneal/api", "https://tune.example.org/anneal/#/jobs/job_1")]
    public void The_console_link_of_a_job_sits_beside_the_api(string api, string expected) =>
        Assert.Equal(expected, ConsoleLink.ForJob(api, "job_1"));
}
