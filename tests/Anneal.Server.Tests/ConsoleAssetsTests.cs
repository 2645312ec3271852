// The web console's static files as the server hands them out: at `/` and `/console/{name}`, with
// no key needed (they hold no data), a Content-Security-Policy that keeps every request on this
// server, gzip, ETag revalidation, and nothing that would reach for the network (offline use).
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Anneal.Server.WebConsole;

namespace Anneal.Server.Tests;

public class ConsoleAssetsTests
{
    static HttpClient Anonymous(TestServer t) => new() { BaseAddress = new Uri(t.Server.BaseUrl + "/") };

    [Fact]
    public async Task The_console_page_is_served_at_the_root_without_a_key_and_with_a_strict_policy()
    {
        await using var t = await TestServer.StartAsync();
        using var http = Anonymous(t);
        using var response = await http.GetAsync("");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        var html = await response.Content.ReadAsStringAsync();
        Assert.Contains("<script type=\"module\" src=\"/console/app.js\"></script>", html);
        var csp = response.Headers.GetValues("Content-Security-Policy").Single();
        Assert.Contains("default-src 'none'", csp);
        Assert.Contains("script-src 'self'", csp);
        Assert.Contains("connect-src 'self'", csp);
        Assert.Equal("no-referrer", response.Headers.GetValues("Referrer-Policy").Single());
        Assert.Equal("nosniff", response.Headers.GetValues("X-Content-Type-Options").Single());
    }

    [Fact]
    public async Task Every_asset_the_page_names_is_served_and_the_api_still_needs_a_key()
    {
        await using var t = await TestServer.StartAsync();
        using var http = Anonymous(t);
        foreach (var name in ConsoleApi.AssetNames.Where(n => n != "index.html"))
        {
            using var response = await http.GetAsync($"console/{name}");
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{name}: {response.StatusCode}");
            Assert.Equal(name.EndsWith(".css") ? "text/css" : "text/javascript", response.Content.Headers.ContentType?.MediaType);
        }
        using var api = await http.GetAsync("api/learning/jobs");
        Assert.Equal(HttpStatusCode.Unauthorized, api.StatusCode);
    }

    [Fact]
    public async Task An_unknown_console_file_is_a_404_naming_it()
    {
        await using var t = await TestServer.StartAsync();
        using var http = Anonymous(t);
        using var response = await http.GetAsync("console/missing.js");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Contains("The console has no file 'missing.js'.", await response.Content.ReadAsStringAsync());
        using var traversal = await http.GetAsync("console/..%2Fappsettings.json");
        Assert.Equal(HttpStatusCode.NotFound, traversal.StatusCode);
    }

    [Fact]
    public async Task Assets_are_gzipped_when_asked_and_a_matching_etag_gets_304()
    {
        await using var t = await TestServer.StartAsync();
        using var http = Anonymous(t);
        using var plain = await http.GetAsync("console/job.js");
        var text = await plain.Content.ReadAsByteArrayAsync();
        var etag = plain.Headers.ETag!;
        Assert.Equal("no-cache", plain.Headers.CacheControl?.ToString());

        using var zipped = new HttpRequestMessage(HttpMethod.Get, "console/job.js");
        zipped.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
        using var gz = await http.SendAsync(zipped);
        Assert.Equal("gzip", gz.Content.Headers.ContentEncoding.Single());
        var compressed = await gz.Content.ReadAsByteArrayAsync();
        Assert.True(compressed.Length < text.Length / 2, $"gzip {compressed.Length} bytes of {text.Length}");
        using var unzip = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
        using var back = new MemoryStream();
        await unzip.CopyToAsync(back);
        Assert.Equal(text, back.ToArray());

        using var again = new HttpRequestMessage(HttpMethod.Get, "console/job.js");
        again.Headers.IfNoneMatch.Add(etag);
        using var notModified = await http.SendAsync(again);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        Assert.Empty(await notModified.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task No_asset_loads_anything_from_another_host()
    {
        await using var t = await TestServer.StartAsync();
        using var http = Anonymous(t);
        foreach (var name in ConsoleApi.AssetNames)
        {
            var text = await http.GetStringAsync(name == "index.html" ? "" : $"console/{name}");
            // The SVG namespace is an identifier, not a request.
            var urls = Regex.Matches(text, @"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'""`)]*", RegexOptions.IgnoreCase)
                .Select(m => m.Value).Where(u => u != "http://www.w3.org/2000/svg").ToList();
            Assert.True(urls.Count == 0, $"{name} names {string.Join(", ", urls)}");
            // Server strings become text nodes; markup from strings would let a dataset inject script.
            Assert.DoesNotContain(".innerHTML", text);
            Assert.DoesNotContain("insertAdjacentHTML", text);
        }
    }

    [Fact]
    public async Task The_first_load_of_the_console_stays_under_40_KB_gzipped()
    {
        // Everything the first page load fetches: index.html and every asset (the module graph
        // imports them all). 40 KB is the budget stated in the README.
        await using var t = await TestServer.StartAsync();
        using var http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None })
            { BaseAddress = new Uri(t.Server.BaseUrl + "/") };
        long total = 0;
        foreach (var name in ConsoleApi.AssetNames)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, name == "index.html" ? "" : $"console/{name}");
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
            using var response = await http.SendAsync(request);
            total += (await response.Content.ReadAsByteArrayAsync()).Length;
        }
        Assert.InRange(total, 1, 40 * 1024);
    }
}
