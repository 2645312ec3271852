// A dataset over the server's upload limit (anneal serve --max-upload-mb) is refused with the
// sizes, exit 2, every time: the upload waits for 100-continue, so the 413 arrives before the body
// and is never lost to a connection closed mid-upload ("broken pipe").
namespace Anneal.Cli.Tests.Files;

public class UploadLimitTests
{
    /// <summary>A valid dataset of 3.1 MiB (between 3.1 and 3.14 MiB).</summary>
    static string BigDataset()
    {
        var filler = new string('x', 1000);
        var lines = new List<string>();
        var bytes = 0L;
        for (var i = 0; bytes < 3.12 * 1024 * 1024; i++)
        {
            var line = $$"""{"messages":[{"role":"user","content":"Question {{i}} {{filler}}"},{"role":"assistant","content":"Answer {{i}}."}]}""";
            lines.Add(line);
            bytes += line.Length + 1;
        }
        return string.Join("\n", lines) + "\n";
    }

    [Fact]
    public async Task An_oversized_upload_is_refused_with_both_sizes_every_time()
    {
        await using var server = await TestServer.StartAsync(maxUploadBytes: 1024 * 1024);
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("big.jsonl", BigDataset());
        box.Write("train.toml", Samples.TinyToml(data: "big.jsonl"));
        const string expected = "big.jsonl is 3.1 MiB; the server accepts at most 1 MiB (anneal serve --max-upload-mb)";

        for (var attempt = 0; attempt < 6; attempt++)
        {
            var upload = await box.RunAsync("files", "upload", "big.jsonl");
            Assert.True(upload.ExitCode == 2, $"attempt {attempt}: {upload}");
            Assert.Contains(expected, upload.Err);
            Assert.DoesNotContain("cannot reach", upload.Err);
        }
        for (var attempt = 0; attempt < 3; attempt++)
        {
            var train = await box.RunAsync("train", "--config", "train.toml", "--no-poll");
            Assert.True(train.ExitCode == 2, $"attempt {attempt}: {train}");
            Assert.Contains(expected, train.Err);
        }
        Assert.Equal(0, await server.FileCountAsync());
        Assert.Equal(0, await server.JobCountAsync());

        // A file under the limit still goes through on the same server.
        box.Write("small.jsonl", Samples.Dataset(5));
        var small = await box.RunAsync("files", "upload", "small.jsonl");
        Assert.True(small.ExitCode == 0, small.ToString());
    }
}
