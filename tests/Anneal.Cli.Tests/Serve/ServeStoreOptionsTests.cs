// `anneal serve --database`, `--object-store` and `--worker-token`: bad values are one line naming
// the option and what was expected; a data folder that belongs to a PostgreSQL database is not opened as SQLite.
namespace Anneal.Cli.Tests.Serve;

public class ServeStoreOptionsTests
{
    [Theory]
    [InlineData("--database", "mysql://u@h/db", "--database: database 'mysql://u@h/db' is not a postgres://user@host:port/dbname URL")]
    [InlineData("--database", "postgres://u@h:5432/", "names no database")]
    [InlineData("--worker-token", "short", "--worker-token: 5 characters is too short")]
    [InlineData("--worker-window-hours", "0", "--worker-window-hours 0: expected a number of hours above 0 and at most 8760")]
    [InlineData("--worker-window-hours", "1e300", "--worker-window-hours 1E+300: expected a number of hours above 0")]
    public async Task A_bad_store_option_is_one_line_naming_it_and_exit_2(string option, string value, string expected)
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync("serve", "--urls", "http://127.0.0.1:0", "--data-dir", "data", option, value);
        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.Contains(expected, lines[0]);
    }

    [Theory]
    [InlineData("--object-store '/mnt/shared': expected s3://bucket or s3://bucket/prefix", "--object-store", "/mnt/shared")]
    [InlineData("bucket 'My_Bucket' is not an S3 bucket name", "--object-store", "s3://My_Bucket/anneal")]
    [InlineData("--s3-endpoint 'minio:9000' (or AWS_ENDPOINT_URL): expected an http:// or https:// address", "--object-store", "s3://anneal/prod", "--s3-endpoint", "minio:9000")]
    [InlineData("--s3-endpoint and --s3-region describe the bucket of --object-store s3://bucket/prefix, which was not given", "--s3-endpoint", "http://127.0.0.1:9000")]
    public async Task A_bad_object_store_option_is_one_line_naming_it_and_exit_2(string expected, params string[] options)
    {
        using var box = new CliSandbox();
        var result = await box.RunAsync(["serve", "--urls", "http://127.0.0.1:0", "--data-dir", "data", .. options]);
        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.Contains(expected, lines[0]);
        Assert.False(File.Exists(Path.Combine(box.Dir, "data", "anneal.db")));
    }

    [Fact]
    public async Task A_data_folder_that_belongs_to_a_database_is_refused_without_it_and_an_unreachable_database_is_one_line()
    {
        using var box = new CliSandbox();
        Directory.CreateDirectory(Path.Combine(box.Dir, "data"));
        File.WriteAllText(Path.Combine(box.Dir, "data", "database.url"), "postgres://anneal:secret@127.0.0.1:1/anneal\n");
        var refused = await box.RunAsync("serve", "--urls", "http://127.0.0.1:0", "--data-dir", "data");
        Assert.True(refused.ExitCode == 2, refused.ToString());
        Assert.Contains("belongs to the database postgres://anneal:***@127.0.0.1:1/anneal", refused.Err);
        Assert.Contains("--database", refused.Err);
        Assert.DoesNotContain("secret", refused.Err);
        Assert.False(File.Exists(Path.Combine(box.Dir, "data", "anneal.db")));

        var unreachable = await box.RunAsync("serve", "--urls", "http://127.0.0.1:0", "--data-dir", "data", "--database", "postgres://anneal:secret@127.0.0.1:1/anneal");
        Assert.True(unreachable.ExitCode == 2, unreachable.ToString());
        Assert.StartsWith("error: database postgres://anneal:***@127.0.0.1:1/anneal: ", unreachable.Err);
        Assert.DoesNotContain("secret", unreachable.Err);
        Assert.DoesNotContain("   at ", unreachable.Out + unreachable.Err);
    }
}
