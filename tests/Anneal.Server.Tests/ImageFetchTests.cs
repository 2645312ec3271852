// https images in uploaded datasets: fetched once during validation from a TLS server on loopback
// (allowed here by name, as only tests may), stored content-addressed beside the file; and each
// refusal — private/loopback address (also after a redirect), 404, slow, too large, not an image,
// corrupt — a `Line N: messages[0].content[0]: …` error with nothing left behind. Local image paths
// are refused at upload (a JSONL carries no files; a path would name whatever else is stored), and
// a stored image is found by its hash only within its own dataset's folder.
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Vision;
using Anneal.Server.Files;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using SkiaSharp;

namespace Anneal.Server.Tests;

public sealed class ImageFetchTests : IAsyncLifetime
{
    WebApplication images = null!;
    int port;
    static readonly byte[] RedPng = Png(SKColors.Red);
    static readonly byte[] BluePng = Png(SKColors.Blue);

    static byte[] Png(SKColor colour)
    {
        using var bitmap = new SKBitmap(40, 30);
        bitmap.Erase(colour);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
    }

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        var cert = SelfSigned();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(cert)));
        images = builder.Build();
        images.MapGet("/red.png", () => Results.Bytes(RedPng, "image/png"));
        images.MapGet("/blue.png", () => Results.Bytes(BluePng, "image/png"));
        images.MapGet("/text", () => Results.Text("hello, not an image"));
        images.MapGet("/corrupt.png", () => Results.Bytes(RedPng[..(RedPng.Length / 2)], "image/png"));
        images.MapGet("/big.png", () => Results.Bytes(new byte[50_000], "image/png"));
        images.MapGet("/slow.png", async () => { await Task.Delay(8000); return Results.Bytes(RedPng, "image/png"); });
        images.MapGet("/to-loopback", () => Results.Redirect($"https://127.0.0.1:{port}/red.png"));
        images.MapGet("/to-red", () => Results.Redirect($"https://localhost:{port}/red.png"));
        await images.StartAsync();
        port = new Uri(images.Urls.First()).Port;
    }

    public async Task DisposeAsync() => await images.DisposeAsync();

    static ServerOptions Allow(ServerOptions o) => o with
    {
        ImageFetch = new ImageFetchSettings { TestHosts = new HashSet<string> { "localhost" }, Timeout = TimeSpan.FromSeconds(4), MaxBytes = 20_000 },
    };

    static string Line(string url) => new JsonObject
    {
        ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } }) },
            new JsonObject { ["role"] = "assistant", ["content"] = "Red." }),
    }.ToJsonString();

    [Fact]
    public async Task Images_are_fetched_once_and_stored_content_addressed_beside_the_file()
    {
        await using var t = await TestServer.StartAsync(Allow);
        var jsonl = string.Join("\n", Line($"https://localhost:{port}/red.png"), Line($"https://localhost:{port}/to-red"), Line($"https://localhost:{port}/red.png")) + "\n";
        var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(jsonl));
        Assert.True(file.Status == FileStatus.Ready, string.Join("; ", file.Errors ?? []));

        var blob = Path.Combine(t.DataDir, "files", file.Sha256);
        var folder = StoredImages.FolderFor(blob);
        var stored = Directory.GetFiles(folder).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(new[] { StoredImages.Hash(RedPng), StoredImages.IndexFile }.Order(), stored);        // one copy for two URLs
        Assert.Equal(RedPng, StoredImages.Resolver(blob)($"https://localhost:{port}/to-red"));
    }

    [Stores.S3Fact]
    public async Task With_an_object_store_the_images_go_into_the_bucket_and_follow_the_file_to_a_server_that_lacks_them()
    {
        const string token = "worker-token-0123456789";
        var bucket = Stores.TestS3.Shared.NewBucket();
        await using var t = await TestServer.StartAsync(o => Allow(o) with { ObjectStore = bucket, WorkerToken = token });
        var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(Line($"https://localhost:{port}/red.png") + "\n"));
        Assert.True(file.Status == FileStatus.Ready, string.Join("; ", file.Errors ?? []));
        var red = StoredImages.Hash(RedPng);
        Assert.Equal(RedPng, await Stores.TestS3.Shared.GetAsync(bucket, $"files/{file.Sha256}.images/{red}"));
        Assert.NotNull(await Stores.TestS3.Shared.GetAsync(bucket, $"files/{file.Sha256}.images{Storage.ObjectFiles.ManifestSuffix}"));

        // This server's data folder loses the file and its images: a worker's image download fetches both.
        var files = Path.Combine(t.DataDir, "files");
        Directory.Delete(files, recursive: true);
        Directory.CreateDirectory(files);
        using var worker = new HttpClient { BaseAddress = new Uri(t.Server.BaseUrl + "/") };
        worker.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(RedPng, await worker.GetByteArrayAsync($"api/workers/files/{file.Id}/images/{red}"));
        Assert.Equal(RedPng, StoredImages.Resolver(Path.Combine(files, file.Sha256))($"https://localhost:{port}/red.png"));

        // The last file using the bytes takes the images out of the bucket too.
        Assert.Equal(HttpStatusCode.OK, (await t.Http.DeleteAsync($"learning/files/{file.Id}")).StatusCode);
        Assert.Null(await Stores.TestS3.Shared.GetAsync(bucket, $"files/{file.Sha256}.images/{red}"));
        Assert.Null(await Stores.TestS3.Shared.GetAsync(bucket, $"files/{file.Sha256}.images{Storage.ObjectFiles.ManifestSuffix}"));
        Assert.False(Directory.Exists(StoredImages.FolderFor(Path.Combine(files, file.Sha256))));
    }

    [Theory]
    [InlineData("https://127.0.0.1:{port}/red.png", "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address")]
    [InlineData("https://10.1.2.3/x.png", "refused: 10.1.2.3 resolves to 10.1.2.3, a private address")]
    [InlineData("https://169.254.169.254/latest/meta-data", "a link-local (metadata) address")]
    [InlineData("https://localhost:{port}/to-loopback", "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address")]
    [InlineData("https://localhost:{port}/missing.png", "HTTP 404 Not Found")]
    [InlineData("https://localhost:{port}/slow.png", "no complete answer within 4 s")]
    [InlineData("https://localhost:{port}/big.png", "50,000 bytes, more than the 20,000 allowed")]
    [InlineData("https://localhost:{port}/text", "not a PNG, JPEG, WebP or GIF image")]
    [InlineData("https://localhost:{port}/corrupt.png", "the image")]
    public async Task Bad_images_fail_the_file_with_the_line_and_part_and_leave_nothing(string url, string expected)
    {
        await using var t = await TestServer.StartAsync(Allow);
        var jsonl = Line($"https://localhost:{port}/red.png") + "\n" + Line(url.Replace("{port}", port.ToString())) + "\n";
        var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(jsonl));
        Assert.Equal(FileStatus.Failed, file.Status);
        Assert.Null(file.NumExamples); // a failed file reports no count rather than one that includes broken lines
        var error = Assert.Single(file.Errors!);
        Assert.StartsWith("Line 2: messages[0].content[0]: ", error.ToString());
        Assert.Contains(expected, error.Message);
        var blob = Path.Combine(t.DataDir, "files", file.Sha256);
        Assert.False(Directory.Exists(StoredImages.FolderFor(blob)));
        Assert.Empty(Directory.GetDirectories(Path.Combine(t.DataDir, "files")));
    }

    [Fact]
    public async Task A_jsonl_upload_with_local_image_paths_is_refused_and_nothing_is_stored()
    {
        await using var t = await TestServer.StartAsync(Allow);
        // Another upload's fetched image, in the shared files/ folder: a relative path could name it.
        var other = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(Line($"https://localhost:{port}/red.png") + "\n"));
        Assert.Equal(FileStatus.Ready, other.Status);
        var files = Path.Combine(t.DataDir, "files");
        var theirs = $"{other.Sha256}.images/{StoredImages.Hash(RedPng)}";
        Assert.True(File.Exists(Path.Combine(files, theirs)));
        var before = Directory.GetFileSystemEntries(files, "*", SearchOption.AllDirectories).Order().ToList();

        var legacy = new JsonObject
        {
            ["images"] = new JsonArray("../red.png"),
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Colour?" }, new JsonObject { ["role"] = "assistant", ["content"] = "Red." }),
        }.ToJsonString();
        var jsonl = string.Join("\n", Line("data:image/png;base64," + Convert.ToBase64String(RedPng)), Line("x.png"), Line(theirs), Line("/etc/passwd"), legacy) + "\n";
        var problem = await t.UploadRefusedAsync(Encoding.UTF8.GetBytes(jsonl));
        Assert.Equal(ErrorCodes.ValidationFailed, problem["code"]!.GetValue<string>());
        var errors = problem["errors"]!.AsArray().Select(e => new ErrorItem(e!["line"]?.GetValue<int>(), e["field"]?.GetValue<string>(), e["message"]!.GetValue<string>()).ToString()).ToList();
        const string expected = "cannot be read from an uploaded JSONL file; expected an https:// URL, a data:image/...;base64,... URI or an image file packed with the dataset";
        Assert.Equal(4, errors.Count);
        Assert.Equal($"Line 2: messages[0].content[0]: local image path \"x.png\" {expected}", errors[0][..errors[0].IndexOf(" (`anneal train`", StringComparison.Ordinal)]);
        Assert.StartsWith($"Line 3: messages[0].content[0]: local image path \"{theirs[..57]}...\" {expected}", errors[1]);
        Assert.StartsWith($"Line 4: messages[0].content[0]: local image path \"/etc/passwd\" {expected}", errors[2]);
        Assert.StartsWith($"Line 5: images[0]: local image path \"../red.png\" {expected}", errors[3]);

        // Nothing stored: no blob, no image folder, no temp file; the other upload is untouched and the only file listed.
        Assert.Equal(before, Directory.GetFileSystemEntries(files, "*", SearchOption.AllDirectories).Order().ToList());
        Assert.Empty(Directory.GetFiles(Path.Combine(t.DataDir, "tmp")));
        var listed = await t.Http.GetFromJsonAsync<FileList>("learning/files", AnnealJson.Options);
        Assert.Equal([other.Id], listed!.Data.Select(f => f.Id));
    }

    [Fact]
    public async Task A_stored_image_is_read_by_hash_only_for_its_own_dataset()
    {
        // What the trainer reads for an image url that is a path in a server upload (VisionSftData):
        // the content hash of an image stored for that dataset, and nothing else in files/.
        await using var t = await TestServer.StartAsync(Allow);
        var red = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(Line($"https://localhost:{port}/red.png") + "\n"));
        var blue = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(Line($"https://localhost:{port}/blue.png") + "\n"));
        Assert.Equal([FileStatus.Ready, FileStatus.Ready], new[] { red.Status, blue.Status });
        var files = Path.Combine(t.DataDir, "files");
        string redBlob = Path.Combine(files, red.Sha256), blueBlob = Path.Combine(files, blue.Sha256);
        string redHash = StoredImages.Hash(RedPng), blueHash = StoredImages.Hash(BluePng);

        Assert.Equal(RedPng, StoredImages.ReadByHash(redBlob, redHash));
        Assert.Equal(BluePng, StoredImages.ReadByHash(blueBlob, blueHash));
        Assert.Null(StoredImages.ReadByHash(blueBlob, redHash));                                   // the other dataset's image
        Assert.Null(StoredImages.ReadByHash(blueBlob, $"{red.Sha256}.images/{redHash}"));           // a path to it
        Assert.Null(StoredImages.ReadByHash(blueBlob, $"../{red.Sha256}.images/{redHash}"));
        Assert.Null(StoredImages.ReadByHash(blueBlob, Path.Combine(files, $"{red.Sha256}.images", redHash)));
        Assert.Null(StoredImages.ReadByHash(blueBlob, StoredImages.IndexFile));
        Assert.Null(StoredImages.ReadByHash(blueBlob, blueHash.ToUpperInvariant()));

        // A stored file whose bytes no longer match its name is refused, not read.
        File.WriteAllBytes(Path.Combine(StoredImages.FolderFor(blueBlob), blueHash), RedPng);
        Assert.Throws<InvalidDataException>(() => StoredImages.ReadByHash(blueBlob, blueHash));
    }

    [Theory]
    [InlineData("127.0.0.1", "a loopback address")]
    [InlineData("::1", "a loopback address")]
    [InlineData("192.168.1.5", "a private address")]
    [InlineData("172.20.0.1", "a private address")]
    [InlineData("100.100.0.1", "a private address")]
    [InlineData("fd00::1", "a private address")]
    [InlineData("fe80::1", "a link-local address")]
    [InlineData("::ffff:10.0.0.1", "a private address")]
    [InlineData("0.0.0.0", "an unspecified address")]
    [InlineData("93.184.216.34", null)]
    [InlineData("2606:2800:220:1::1", null)]
    public void Address_rules(string address, string? refused) =>
        Assert.Equal(refused, ImageFetching.Refused(IPAddress.Parse(address)));
}
