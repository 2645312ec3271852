// The divergence warning: once, when the loss climbs far above its lowest value; never for a
// loss that falls or wobbles.
using System.Text.Json;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training.Tests.Training;

public class DivergenceWatchTests
{
    static List<TrainerEvent> Watch(params double[] losses)
    {
        var stdout = new StringWriter();
        var events = new TrainerEvents(stdout, new StringWriter());
        var watch = new DivergenceWatch();
        for (var i = 0; i < losses.Length; i++) watch.Observe(i + 1, losses[i], 0.5, events);
        return stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize<TrainerEvent>(l, AnnealJson.Options)!).ToList();
    }

    [Fact]
    public void A_loss_that_runs_away_is_warned_about_once_naming_the_learning_rate()
    {
        var e = Assert.Single(Watch(3.0, 2.5, 2.0, 4.5, 9.0, 40.0));
        Assert.Equal((EventTypes.Diverging, "warning"), (e.Type, e.Level));
        Assert.Equal(4, e.Data!["step"]!.GetValue<long>());
        Assert.Equal(3, e.Data["lowest_step"]!.GetValue<long>());
        Assert.Contains("learning_rate 0.5 is likely too high", e.Message);
    }

    [Theory]
    [InlineData(new[] { 3.0, 2.5, 2.0, 1.5, 1.0 })]
    [InlineData(new[] { 2.0, 2.4, 1.9, 2.6, 1.8 })]
    [InlineData(new[] { 0.2, 0.5, 0.9, 0.3 })] // doubled, but by less than MinRise
    public void A_falling_or_wobbling_loss_is_not(double[] losses) => Assert.Empty(Watch(losses));
}
