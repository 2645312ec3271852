// Files API against a real server: upload (streamed, deduplicated, validated while it streams),
// get/list/delete, and bad input (malformed JSONL, bad UTF-8, empty file, oversize, no auth, other org).
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;

namespace Anneal.Server.Tests;

public class FilesTests
{
    [Fact]
    public async Task Upload_stores_the_bytes_under_their_sha256_and_a_text_dataset_is_ready_at_once()
    {
        await using var t = await TestServer.StartAsync();
        var bytes = TestServer.Dataset(5);
        var response = await t.UploadAsync(bytes, "my-data.jsonl");
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var file = (await response.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!;
        // Validated while it streamed: the 201 itself carries the verdict and the count.
        Assert.Equal(FileStatus.Ready, file.Status);
        Assert.Equal(5, file.NumExamples);
        var sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
        Assert.StartsWith("file_", file.Id);
        Assert.Equal("file", file.Object);
        Assert.Equal("my-data.jsonl", file.Filename);
        Assert.Equal(bytes.Length, file.Bytes);
        Assert.Equal(sha, file.Sha256);
        Assert.Equal("fine-tune", file.Purpose);
        Assert.Equal(bytes, await File.ReadAllBytesAsync(Path.Combine(t.DataDir, "files", sha)));

        var ready = await t.WaitFileAsync(file.Id);
        Assert.Equal(FileStatus.Ready, ready.Status);
        Assert.Equal(5, ready.NumExamples);
        Assert.Equal(0, ready.TotalErrors);
    }

    [Fact]
    public async Task Uploading_the_same_bytes_again_returns_the_existing_file_with_200()
    {
        await using var t = await TestServer.StartAsync();
        var bytes = TestServer.Dataset(2);
        var first = await (await t.UploadAsync(bytes)).Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options);
        var again = await t.Http.PostAsync("files", TestServer.Multipart(bytes, "renamed.jsonl")); // alias route
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(first!.Id, (await again.Content.ReadFromJsonAsync<FileObject>(AnnealJson.Options))!.Id);
        Assert.Single(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "tmp")));
    }

    [Fact]
    public async Task Malformed_jsonl_is_refused_with_422_and_line_numbered_errors_first_20_and_total()
    {
        await using var t = await TestServer.StartAsync();
        var lines = new List<string> { TestServer.GoodLine };
        for (var i = 0; i < 25; i++) lines.Add("{not json");
        lines.Add("""{"messages":[{"role":"user","content":"only a user turn"}]}""");
        var problem = await t.UploadRefusedAsync(Encoding.UTF8.GetBytes(string.Join("\n", lines)));
        Assert.Equal(ErrorCodes.ValidationFailed, problem["code"]!.GetValue<string>());
        Assert.Equal(26, problem["total_errors"]!.GetValue<int>());
        var errors = problem["errors"]!.AsArray();
        Assert.Equal(20, errors.Count);
        Assert.Equal(2, errors[0]!["line"]!.GetValue<int>());
        Assert.Equal(21, errors[19]!["line"]!.GetValue<int>());
        Assert.StartsWith("malformed JSON at byte 2", errors[0]!["message"]!.GetValue<string>());
        Assert.Contains("26 errors; the first 20 are listed", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_refused_dataset_leaves_no_file_no_bytes_and_no_temp_file()
    {
        await using var t = await TestServer.StartAsync();
        var problem = await t.UploadRefusedAsync(Encoding.UTF8.GetBytes(TestServer.GoodLine + "\n{not json\n"));
        Assert.Equal(1, problem["total_errors"]!.GetValue<int>());
        var error = Assert.Single(problem["errors"]!.AsArray());
        Assert.Equal(2, error!["line"]!.GetValue<int>());
        Assert.Null(error["field"]);
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "tmp")));
        Assert.Empty((await t.Http.GetFromJsonAsync<FileList>("learning/files", AnnealJson.Options))!.Data);
        // Fixed, the same upload is accepted.
        Assert.Equal(FileStatus.Ready, (await t.UploadReadyAsync(Encoding.UTF8.GetBytes(TestServer.GoodLine + "\n"))).Status);
    }

    [Fact]
    public async Task Invalid_utf8_is_refused_naming_the_line_and_byte()
    {
        await using var t = await TestServer.StartAsync();
        var bytes = Encoding.UTF8.GetBytes(TestServer.GoodLine + "\n").Concat(new byte[] { 0x7b, 0xff, 0xfe, 0x7d, 0x0a }).ToArray();
        var error = Assert.Single((await t.UploadRefusedAsync(bytes))["errors"]!.AsArray())!;
        Assert.Equal(2, error["line"]!.GetValue<int>());
        Assert.Equal("invalid UTF-8 at byte 2 of the line; save the file as UTF-8", error["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_refused_upload_is_problem_json_only_when_the_client_asks_for_it()
    {
        await using var t = await TestServer.StartAsync();
        var bad = Encoding.UTF8.GetBytes("{\"messages\": 5}\n");
        // ProblemAsync checks the media type against the request's Accept.
        using var request = new HttpRequestMessage(HttpMethod.Post, "files") { Content = TestServer.Multipart(bad) };
        request.Headers.Accept.ParseAdd("application/problem+json");
        var problem = await TestServer.ProblemAsync(await t.Http.SendAsync(request), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("Line 1: messages: must be a list of messages, got a number", TestServer.ErrorText(problem["errors"]![0]!));
        var plain = await t.UploadRefusedAsync(bad);
        Assert.Equal(problem["errors"]!.ToJsonString(), plain["errors"]!.ToJsonString());
    }

    [Fact]
    public async Task A_file_of_blank_lines_is_refused_as_having_no_examples()
    {
        await using var t = await TestServer.StartAsync();
        var error = Assert.Single((await t.UploadRefusedAsync("\n  \r\n\n"u8.ToArray()))["errors"]!.AsArray())!;
        Assert.Null(error["line"]);
        Assert.Contains("no examples", error["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Empty_file_is_rejected_with_400_problem()
    {
        await using var t = await TestServer.StartAsync();
        var problem = await TestServer.ProblemAsync(await t.UploadAsync([]), HttpStatusCode.BadRequest);
        Assert.Contains("empty", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Upload_without_file_field_or_with_wrong_purpose_is_a_400_naming_the_field()
    {
        await using var t = await TestServer.StartAsync();
        var noFile = new MultipartFormDataContent { { new StringContent("fine-tune"), "purpose" } };
        var p1 = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/files", noFile), HttpStatusCode.BadRequest);
        Assert.Contains("\"field\":\"file\"", TestServer.ErrorsText(p1));
        var p2 = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/files", TestServer.Multipart(TestServer.Dataset(1), purpose: "batch")), HttpStatusCode.BadRequest);
        Assert.Contains("\"field\":\"purpose\"", TestServer.ErrorsText(p2));
        var p3 = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/files", new StringContent("{}", Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);
        Assert.Contains("multipart/form-data", p3["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Oversized_upload_gets_413_and_leaves_nothing_behind()
    {
        await using var t = await TestServer.StartAsync(o => o with { MaxUploadBytes = 1000 });
        // Chunked (no Content-Length): the limit is enforced while streaming.
        var content = new StreamContent(new MemoryStream(TestServer.Dataset(50)));
        var form = new MultipartFormDataContent { { content, "file", "big.jsonl" } };
        form.Headers.ContentLength = null;
        var request = new HttpRequestMessage(HttpMethod.Post, "learning/files") { Content = form };
        request.Headers.TransferEncodingChunked = true;
        var problem = await TestServer.ProblemAsync(await t.Http.SendAsync(request), HttpStatusCode.RequestEntityTooLarge);
        Assert.Equal(ErrorCodes.PayloadTooLarge, problem["code"]!.GetValue<string>());
        Assert.Contains("1000", problem["detail"]!.GetValue<string>());
        // With a Content-Length far above the limit, rejected before reading.
        await using var big = await TestServer.StartAsync(o => o with { MaxUploadBytes = 10_000 });
        await TestServer.ProblemAsync(await big.UploadAsync(new byte[200_000]), HttpStatusCode.RequestEntityTooLarge);

        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "tmp")));
        var list = await t.Http.GetFromJsonAsync<FileList>("learning/files", AnnealJson.Options);
        Assert.Empty(list!.Data);
    }

    [Fact]
    public async Task Missing_or_invalid_key_gets_401_problem_and_health_needs_none()
    {
        await using var t = await TestServer.StartAsync();
        using var anonymous = t.Client(null);
        var p1 = await TestServer.ProblemAsync(await anonymous.GetAsync("learning/files"), HttpStatusCode.Unauthorized);
        Assert.Equal(ErrorCodes.Unauthorized, p1["code"]!.GetValue<string>());
        using var wrong = t.Client("ank_not-a-real-key");
        await TestServer.ProblemAsync(await wrong.PostAsync("learning/files", TestServer.Multipart(TestServer.Dataset(1))), HttpStatusCode.Unauthorized);
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("health")).StatusCode);
    }

    [Fact]
    public async Task Another_organisations_file_is_404_for_get_delete_and_job_creation()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var p = await TestServer.ProblemAsync(await other.GetAsync($"learning/files/{file.Id}"), HttpStatusCode.NotFound);
        Assert.Equal(ErrorCodes.NotFound, p["code"]!.GetValue<string>());
        await TestServer.ProblemAsync(await other.DeleteAsync($"learning/files/{file.Id}"), HttpStatusCode.NotFound);
        var list = await other.GetFromJsonAsync<FileList>("learning/files", AnnealJson.Options);
        Assert.Empty(list!.Data);
        var create = await other.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id)));
        var problem = await TestServer.ProblemAsync(create, HttpStatusCode.UnprocessableEntity);
        Assert.Contains("training_file_id", TestServer.ErrorsText(problem));
        // Same bytes in another organisation: a separate file object, one blob on disk.
        var mine = await t.UploadReadyAsync(TestServer.Dataset(3), other);
        Assert.NotEqual(file.Id, mine.Id);
        Assert.Single(Directory.GetFiles(Path.Combine(t.DataDir, "files")));
    }

    [Fact]
    public async Task List_pages_newest_first_with_after_and_has_more()
    {
        await using var t = await TestServer.StartAsync();
        var ids = new List<string>();
        for (var i = 1; i <= 5; i++) ids.Add((await t.UploadReadyAsync(TestServer.Dataset(i))).Id);
        ids.Reverse();
        var page1 = (await t.Http.GetFromJsonAsync<FileList>("learning/files?limit=2", AnnealJson.Options))!;
        Assert.Equal(ids[..2], page1.Data.Select(f => f.Id));
        Assert.True(page1.HasMore);
        var page2 = (await t.Http.GetFromJsonAsync<FileList>($"learning/files?limit=2&after={page1.Data[^1].Id}", AnnealJson.Options))!;
        Assert.Equal(ids[2..4], page2.Data.Select(f => f.Id));
        var page3 = (await t.Http.GetFromJsonAsync<FileList>($"learning/files?limit=2&after={page2.Data[^1].Id}", AnnealJson.Options))!;
        Assert.Equal(ids[4..], page3.Data.Select(f => f.Id));
        Assert.False(page3.HasMore);
        await TestServer.ProblemAsync(await t.Http.GetAsync("learning/files?limit=abc"), HttpStatusCode.BadRequest);
        await TestServer.ProblemAsync(await t.Http.GetAsync("learning/files?limit=0"), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task Delete_removes_the_row_and_the_blob_and_get_alias_then_404s()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        Assert.Equal(HttpStatusCode.OK, (await t.Http.GetAsync($"files/{file.Id}")).StatusCode);
        var deleted = await (await t.Http.DeleteAsync($"learning/files/{file.Id}")).Content.ReadFromJsonAsync<DeletedObject>(AnnealJson.Options);
        Assert.Equal(new DeletedObject(file.Id, "file", true), deleted);
        Assert.False(File.Exists(Path.Combine(t.DataDir, "files", file.Sha256)));
        await TestServer.ProblemAsync(await t.Http.GetAsync($"files/{file.Id}"), HttpStatusCode.NotFound);
        await TestServer.ProblemAsync(await t.Http.DeleteAsync($"learning/files/{file.Id}"), HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task A_file_used_by_an_unfinished_job_cannot_be_deleted()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        var p = await TestServer.ProblemAsync(await t.Http.DeleteAsync($"learning/files/{file.Id}"), HttpStatusCode.Conflict);
        Assert.Contains(job.Id, p["detail"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(t.DataDir, "files", file.Sha256)));
    }

    [Fact]
    public async Task Files_still_processing_when_the_server_stopped_are_validated_on_start()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        await t.Server.DisposeAsync();
        // Put the row back to `processing`, as a stop between upload and validation leaves it.
        using (var conn = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(t.DataDir, "anneal.db")};Pooling=false"))
        {
            conn.Open();
            using var cmd = conn.CreateCommand();
            cmd.CommandText = "UPDATE files SET status = 'processing', num_examples = NULL, errors = NULL, total_errors = NULL";
            Assert.Equal(1, cmd.ExecuteNonQuery());
        }
        await t.RestartAsync();
        var again = await t.WaitFileAsync(file.Id);
        Assert.Equal(FileStatus.Ready, again.Status);
        Assert.Equal(3, again.NumExamples);
    }
}
