// `anneal jobs get ID --plot`: the loss curve drawn with plain characters, for a terminal without
// a browser at hand. Steps run left to right, one column per bucket of steps (its mean loss, so a
// run of thousands of steps fits the width); `*` is the training loss, `o` the validation loss.
//
//   5.02 ┤*
//        │ **
//        │   ***  o
//   3.10 ┤      *****
//        └────────────
//         1       240 step
using System.Globalization;

namespace Anneal.Cli.Jobs;

public static class LossPlot
{
    /// <summary>The plot's lines; train and validation are (step, value) sorted by step.</summary>
    public static IReadOnlyList<string> Render(IReadOnlyList<(long Step, double Value)> train, IReadOnlyList<(long Step, double Value)> validation,
        int width = 72, int height = 12)
    {
        var all = train.Concat(validation).Where(p => double.IsFinite(p.Value)).ToList();
        if (all.Count == 0) return ["No loss recorded yet."];
        var labels = new[] { all.Max(p => p.Value), all.Min(p => p.Value) }.Select(Format).ToList();
        var margin = labels.Max(l => l.Length) + 1;
        var columns = Math.Max(10, width - margin - 2);
        height = Math.Max(4, height);
        long x0 = all.Min(p => p.Step), x1 = Math.Max(all.Max(p => p.Step), x0 + 1);
        double y0 = all.Min(p => p.Value), y1 = all.Max(p => p.Value);
        if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }

        var grid = new char[height, columns];
        for (var r = 0; r < height; r++) for (var c = 0; c < columns; c++) grid[r, c] = ' ';
        int Column(long step) => (int)Math.Min(columns - 1, (step - x0) * (columns - 1) / (double)(x1 - x0) + 0.5);
        int Row(double v) => (int)Math.Round((y1 - v) / (y1 - y0) * (height - 1));
        void Plot(IEnumerable<(long Step, double Value)> points, char mark)
        {
            foreach (var bucket in points.Where(p => double.IsFinite(p.Value)).GroupBy(p => Column(p.Step)))
                grid[Row(bucket.Average(p => p.Value)), bucket.Key] = mark;
        }
        Plot(train, '*');
        Plot(validation, 'o');   // drawn last: a validation point stays visible where both land

        var lines = new List<string>(height + 3);
        for (var r = 0; r < height; r++)
        {
            var label = r == 0 ? labels[0] : r == height - 1 ? labels[1] : "";
            var row = new char[columns];
            for (var c = 0; c < columns; c++) row[c] = grid[r, c];
            lines.Add(label.PadLeft(margin - 1) + (label.Length > 0 ? " ┤" : " │") + new string(row).TrimEnd());
        }
        lines.Add(new string(' ', margin) + "└" + new string('─', columns));
        var first = x0.ToString(CultureInfo.InvariantCulture);
        var last = x1.ToString(CultureInfo.InvariantCulture) + " step";
        lines.Add(new string(' ', margin + 1) + first + last.PadLeft(Math.Max(last.Length + 1, columns - first.Length)));
        var legend = new List<string>();
        if (train.Count > 0) legend.Add($"* train.loss ({train.Count} points, last {Format(train[^1].Value)})");
        if (validation.Count > 0) legend.Add($"o val.loss ({validation.Count} points, last {Format(validation[^1].Value)})");
        lines.Add(new string(' ', margin + 1) + string.Join("   ", legend));
        return lines;
    }

    static string Format(double v) => v.ToString(Math.Abs(v) >= 100 ? "0.0" : "0.000", CultureInfo.InvariantCulture);
}
