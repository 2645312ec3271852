// Lists printed by `jobs list`, `models` and friends. At a terminal: a boxed table fitted to the
// width (COLUMNS wins over the detected width). Otherwise (pipes, files, scripts): one
// tab-separated line per row under a header line, never wrapped, so ids stay whole for `cut -f1`.
using Spectre.Console;

namespace Anneal.Cli;

public static class Tables
{
    public static void Write(CliContext ctx, IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        if (!ctx.IsTerminal)
        {
            ctx.Out.WriteLine(string.Join('\t', headers));
            foreach (var row in rows) ctx.Out.WriteLine(string.Join('\t', row.Select(Cell)));
            return;
        }
        var table = new Table().AddColumns(headers.Select(h => new TableColumn(Markup.Escape(h))).ToArray());
        foreach (var row in rows) table.AddRow(row.Select(Markup.Escape).ToArray());
        ctx.Console.Write(table);
    }

    // A tab or line break inside a value would split the row.
    static string Cell(string value) => value.Replace('\t', ' ').Replace('\n', ' ').Replace("\r", "");
}
