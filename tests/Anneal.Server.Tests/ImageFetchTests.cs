// https images in uploaded datasets: fetched once during validation from a TLS server on loopback
// (allowed here by name, as only tests may), stored content-addressed beside the file; and each
// refusal — private/loopback address (also after a redirect), 404, slow, too large, not an image,
// corrupt — a `Line N: messages[0].content[0]: …` error with nothing left behind.
using System.Net;
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
        images.MapGet("/text", () => Results.Text("hello, not an image"));
        images.MapGet("/corrupt.png", () => Results.Bytes(RedPng[..(RedPng.Length / 2)], "image/png"));
        images.MapGet("/big.png", () => Results.Bytes(new byte[50_000], "image/png"));
        images.MapGet("/slow.png", async () => { await Task.Delay(4000); return Results.Bytes(RedPng, "image/png"); });
        images.MapGet("/to-loopback", () => Results.Redirect($"https://127.0.0.1:{port}/red.png"));
        images.MapGet("/to-red", () => Results.Redirect($"https://localhost:{port}/red.png"));
        await images.StartAsync();
        port = new Uri(images.Urls.First()).Port;
    }

    public async Task DisposeAsync() => await images.DisposeAsync();

    static ServerOptions Allow(ServerOptions o) => o with
    {
        ImageFetch = new ImageFetchSettings { TestHosts = new HashSet<string> { "localhost" }, Timeout = TimeSpan.FromSeconds(1.5), MaxBytes = 20_000 },
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

    [Theory]
    [InlineData("https://127.0.0.1:{port}/red.png", "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address")]
    [InlineData("https://10.1.2.3/x.png", "refused: 10.1.2.3 resolves to 10.1.2.3, a private address")]
    [InlineData("https://169.254.169.254/latest/meta-data", "a link-local (metadata) address")]
    [InlineData("https://localhost:{port}/to-loopback", "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address")]
    [InlineData("https://localhost:{port}/missing.png", "HTTP 404 Not Found")]
    [InlineData("https://localhost:{port}/slow.png", "no complete answer within 1.5 s")]
    [InlineData("https://localhost:{port}/big.png", "50,000 bytes, more than the 20,000 allowed")]
    [InlineData("https://localhost:{port}/text", "not a PNG, JPEG, WebP or GIF image")]
    [InlineData("https://localhost:{port}/corrupt.png", "the image")]
    public async Task Bad_images_fail_the_file_with_the_line_and_part_and_leave_nothing(string url, string expected)
    {
        await using var t = await TestServer.StartAsync(Allow);
        var jsonl = Line($"https://localhost:{port}/red.png") + "\n" + Line(url.Replace("{port}", port.ToString())) + "\n";
        var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(jsonl));
        Assert.Equal(FileStatus.Failed, file.Status);
        var error = Assert.Single(file.Errors!);
        Assert.StartsWith("Line 2: messages[0].content[0]: ", error.ToString());
        Assert.Contains(expected, error.Message);
        var blob = Path.Combine(t.DataDir, "files", file.Sha256);
        Assert.False(Directory.Exists(StoredImages.FolderFor(blob)));
        Assert.Empty(Directory.GetDirectories(Path.Combine(t.DataDir, "files")));
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
