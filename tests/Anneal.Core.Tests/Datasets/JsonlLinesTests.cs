using System.Text;
using Anneal.Core.Datasets;

namespace Anneal.Core.Tests.Datasets;

public class JsonlLinesTests
{
    /// <summary>Returns at most a few bytes per Read, as a slow network stream does.</summary>
    sealed class TrickleStream(byte[] data, int chunk) : MemoryStream(data)
    {
        public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, chunk));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(100_000)]
    public void Lines_split_across_reads_keep_their_bytes_and_numbers(int chunk)
    {
        var text = "\uFEFF{\"a\":1}\r\n\n{\"b\":\"é\"}\n  \n{\"c\":3}";
        var lines = JsonlLines.Read(new TrickleStream(Encoding.UTF8.GetBytes(text), chunk)).ToList();
        Assert.Equal([1, 2, 3, 4, 5], lines.Select(l => l.Number));
        Assert.Equal(["{\"a\":1}", "", "{\"b\":\"é\"}", "  ", "{\"c\":3}"], lines.Select(l => Encoding.UTF8.GetString(l.Bytes)));
        Assert.Equal([false, true, false, true, false], lines.Select(l => l.IsBlank));
    }

    [Fact]
    public void A_bom_is_only_dropped_at_the_start_of_the_file()
    {
        var bytes = Encoding.UTF8.GetBytes("{}\n\uFEFF{}\n");
        var lines = JsonlLines.Read(new MemoryStream(bytes)).ToList();
        Assert.Equal(2, lines[0].Bytes.Length);
        Assert.Equal(5, lines[1].Bytes.Length);
    }
}
