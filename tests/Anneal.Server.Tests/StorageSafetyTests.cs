// What failed requests and crashes leave on disk, and who can read it: an aborted upload leaves no
// temp file, start-up sweeps tmp/ and orphaned blobs, DELETE never removes bytes a committed row
// still uses, job creation and file deletion cannot both win, a blob is re-hashed before being
// shared, and the data folder is readable by its owner only.
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Net.Http.Json;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Microsoft.Data.Sqlite;

namespace Anneal.Server.Tests;

public class StorageSafetyTests
{
    static string[] TempFiles(TestServer t) => Directory.GetFiles(Path.Combine(t.DataDir, "tmp"));

    static async Task<bool> Eventually(Func<bool> condition, int seconds = 10)
    {
        for (var i = 0; i < seconds * 20; i++)
        {
            if (condition()) return true;
            await Task.Delay(50);
        }
        return condition();
    }

    [Fact]
    public async Task An_upload_aborted_by_the_client_leaves_no_temp_file()
    {
        await using var t = await TestServer.StartAsync();
        var uri = new Uri(t.Server.BaseUrl);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        var stream = tcp.GetStream();
        const string boundary = "b0undary";
        var head = $"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n";
        var request = $"POST /api/learning/files HTTP/1.1\r\nHost: {uri.Authority}\r\nAuthorization: Bearer {t.ApiKey}\r\n" +
            $"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n{head}";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        await stream.WriteAsync(Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat(TestServer.GoodLine + "\n", 2000))));
        await stream.FlushAsync();
        Assert.True(await Eventually(() => TempFiles(t).Length == 1), "the upload never reached tmp/");

        tcp.Client.LingerState = new LingerOption(true, 0); // reset, as a client that dies does
        tcp.Close();
        Assert.True(await Eventually(() => TempFiles(t).Length == 0), $"left behind: {string.Join(", ", TempFiles(t))}");
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
    }

    [Fact]
    public async Task Start_up_removes_temp_files_and_blobs_no_row_uses_but_keeps_every_used_blob()
    {
        await using var t = await TestServer.StartAsync();
        var kept = await t.UploadReadyAsync();
        await t.Server.DisposeAsync();
        var stray = Path.Combine(t.DataDir, "tmp", "upload_crashed.part");
        await File.WriteAllTextAsync(stray, "half an upload");
        var orphan = Path.Combine(t.DataDir, "files", Convert.ToHexStringLower(SHA256.HashData("deleted"u8)));
        await File.WriteAllTextAsync(orphan, "deleted");

        await t.RestartAsync();
        Assert.False(File.Exists(stray));
        Assert.False(File.Exists(orphan));
        Assert.True(File.Exists(Path.Combine(t.DataDir, "files", kept.Sha256)));
        Assert.Equal(FileStatus.Ready, (await t.WaitFileAsync(kept.Id)).Status);
    }

    [Fact]
    public async Task A_delete_whose_commit_fails_keeps_the_bytes_of_the_file_it_could_not_delete()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        // A deferred foreign key makes the DELETE statement succeed and its COMMIT fail.
        using (var conn = new SqliteConnection($"Data Source={Path.Combine(t.DataDir, "anneal.db")};Pooling=false"))
        {
            conn.Open();
            using var cmd = conn.CreateCommand();
            cmd.CommandText = $"""
                CREATE TABLE test_pin (file_id TEXT REFERENCES files(id) DEFERRABLE INITIALLY DEFERRED);
                INSERT INTO test_pin VALUES ('{file.Id}');
                """;
            cmd.ExecuteNonQuery();
        }
        var response = await t.Http.DeleteAsync($"learning/files/{file.Id}");
        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal(FileStatus.Ready, (await t.WaitFileAsync(file.Id)).Status);
        Assert.True(File.Exists(Path.Combine(t.DataDir, "files", file.Sha256)), "the row survived but its bytes are gone");
    }

    [Fact]
    public async Task Deleting_a_file_and_creating_a_job_on_it_concurrently_never_both_succeed()
    {
        await using var t = await TestServer.StartAsync();
        const int pairs = 30;
        var files = new List<FileObject>();
        for (var i = 0; i < pairs; i++) files.Add(await t.UploadReadyAsync(TestServer.Dataset(1 + i)));

        var outcomes = await Task.WhenAll(files.Select(async f =>
        {
            var delete = t.Http.DeleteAsync($"learning/files/{f.Id}");
            var create = t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(f.Id)));
            return (Delete: (await delete).StatusCode, Create: (await create).StatusCode, File: f);
        }));
        foreach (var (delete, create, f) in outcomes)
        {
            Assert.False(delete == HttpStatusCode.OK && create == HttpStatusCode.Created, $"{f.Id}: deleted and used by a new job");
            Assert.True(delete is HttpStatusCode.OK or HttpStatusCode.Conflict, $"{f.Id}: DELETE answered {delete}");
            Assert.True(create is HttpStatusCode.Created or HttpStatusCode.UnprocessableEntity, $"{f.Id}: create answered {create}");
            if (create == HttpStatusCode.Created) Assert.True(File.Exists(Path.Combine(t.DataDir, "files", f.Sha256)));
        }
    }

    [Fact]
    public async Task A_stored_blob_is_re_hashed_before_another_upload_of_the_same_bytes_shares_it()
    {
        await using var t = await TestServer.StartAsync();
        var bytes = TestServer.Dataset(4);
        var first = await t.UploadReadyAsync(bytes);
        var blob = Path.Combine(t.DataDir, "files", first.Sha256);
        await File.WriteAllTextAsync(blob, "damaged on disk");

        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var second = await t.UploadReadyAsync(bytes, other);
        Assert.Equal(FileStatus.Ready, second.Status);
        Assert.Equal(bytes, await File.ReadAllBytesAsync(blob));
    }

    [Fact]
    public async Task The_data_folder_database_and_blobs_are_readable_by_their_owner_only()
    {
        if (OperatingSystem.IsWindows()) return;
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        const UnixFileMode folder = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        const UnixFileMode owner = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        foreach (var dir in new[] { "", "files", "jobs", "tmp" })
            Assert.Equal(folder, File.GetUnixFileMode(Path.Combine(t.DataDir, dir)));
        foreach (var name in new[] { "anneal.db", "anneal.db-wal", Path.Combine("files", file.Sha256) })
            Assert.True(owner == File.GetUnixFileMode(Path.Combine(t.DataDir, name)), $"{name}: {File.GetUnixFileMode(Path.Combine(t.DataDir, name))}");

        // An existing data folder made by an older version is tightened on start.
        await t.Server.DisposeAsync();
        File.SetUnixFileMode(t.DataDir, folder | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        File.SetUnixFileMode(Path.Combine(t.DataDir, "anneal.db"), owner | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        await t.RestartAsync();
        Assert.Equal(folder, File.GetUnixFileMode(t.DataDir));
        Assert.Equal(owner, File.GetUnixFileMode(Path.Combine(t.DataDir, "anneal.db")));
    }
}
