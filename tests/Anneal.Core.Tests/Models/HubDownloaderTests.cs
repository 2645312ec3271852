using System.Collections.Concurrent;
using Anneal.Core.Models;

namespace Anneal.Core.Tests.Models;

public sealed class HubDownloaderTests : IAsyncLifetime
{
    const string Id = "Qwen/Qwen3-0.6B";
    FakeHub hub = null!;
    readonly DirectoryInfo dir = Directory.CreateTempSubdirectory("anneal-hub-");

    public async Task InitializeAsync() => hub = await FakeHub.StartAsync();

    public async Task DisposeAsync()
    {
        await hub.DisposeAsync();
        dir.Delete(true);
    }

    string Target => Path.Combine(dir.FullName, "Qwen", "Qwen3-0.6B");

    static readonly string[] Wanted =
    [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    ];

    [Fact]
    public async Task Downloads_the_trainer_files_and_nothing_else()
    {
        var files = hub.AddModel(Id);
        var progress = new ConcurrentBag<DownloadProgress>();
        using var downloader = new HubDownloader(hub.Endpoint);

        var folder = await downloader.DownloadAsync(Id, Target, progress.Add);

        Assert.Equal(Target, folder);
        Assert.Equal(Wanted, Directory.GetFiles(Target).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var name in Wanted)
            Assert.Equal(files[name].Bytes, File.ReadAllBytes(Path.Combine(Target, name)));
        // Each file reports its full size at the end.
        foreach (var name in Wanted)
            Assert.Contains(progress, p => p.File == name && p.BytesDone == files[name].Bytes.Length && p.BytesTotal == files[name].Bytes.Length);
        // config.json comes last: a folder with config.json is a complete download.
        var resolves = hub.Requests.Where(r => r.Contains("/resolve/main/")).ToList();
        Assert.Contains("/resolve/main/config.json", resolves[^1]);
    }

    [Fact]
    public async Task A_second_download_keeps_complete_files()
    {
        hub.AddModel(Id);
        using var downloader = new HubDownloader(hub.Endpoint);
        await downloader.DownloadAsync(Id, Target);
        var before = hub.Requests.Count(r => r.Contains("/resolve/"));
        await downloader.DownloadAsync(Id, Target);
        Assert.Equal(before, hub.Requests.Count(r => r.Contains("/resolve/")));
    }

    [Fact]
    public async Task Resumes_a_partial_file_with_a_range_request()
    {
        var files = hub.AddModel(Id);
        var shard = files["model-00001-of-00002.safetensors"].Bytes;
        Directory.CreateDirectory(Target);
        var partial = Path.Combine(Target, "model-00001-of-00002.safetensors.incomplete");
        File.WriteAllBytes(partial, shard[..100_000]);
        var progress = new ConcurrentBag<DownloadProgress>();
        using var downloader = new HubDownloader(hub.Endpoint);

        await downloader.DownloadAsync(Id, Target, progress.Add);

        Assert.Equal(shard, File.ReadAllBytes(Path.Combine(Target, "model-00001-of-00002.safetensors")));
        Assert.False(File.Exists(partial));
        Assert.Contains(hub.Requests, r => r.StartsWith("GET /cdn/Qwen/Qwen3-0.6B/model-00001-of-00002.safetensors | bytes=100000-"));
        Assert.Contains(progress, p => p.File == "model-00001-of-00002.safetensors" && p.BytesDone == 100_000 && p.BytesTotal == shard.Length);
    }

    [Fact]
    public async Task A_checksum_mismatch_is_an_error_and_leaves_no_file()
    {
        var files = hub.AddModel(Id);
        files["model-00002-of-00002.safetensors"] = files["model-00002-of-00002.safetensors"] with { AdvertisedSha256 = new string('0', 64) };
        using var downloader = new HubDownloader(hub.Endpoint);

        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => downloader.DownloadAsync(Id, Target));

        Assert.Contains("model-00002-of-00002.safetensors of Qwen/Qwen3-0.6B", e.Message);
        Assert.Contains($"expected {new string('0', 64)}", e.Message);
        Assert.Contains("corrupt", e.Message);
        Assert.False(File.Exists(Path.Combine(Target, "model-00002-of-00002.safetensors")));
        Assert.False(File.Exists(Path.Combine(Target, "model-00002-of-00002.safetensors.incomplete")));
        Assert.False(File.Exists(Path.Combine(Target, "config.json")));
        Assert.Null(ModelResolver.FindLocal(Id, new ModelSources(dir.FullName, null)));
    }

    [Fact]
    public async Task Unauthorized_names_the_model_the_endpoint_and_hf_token()
    {
        hub.AddModel(Id);
        hub.RequiredToken = "secret";
        using (var anonymous = new HubDownloader(hub.Endpoint))
        {
            var e = await Assert.ThrowsAsync<ModelDownloadException>(() => anonymous.DownloadAsync(Id, Target));
            Assert.Contains(Id, e.Message);
            Assert.Contains(hub.Endpoint, e.Message);
            Assert.Contains("HTTP 401", e.Message);
            Assert.Contains("HF_TOKEN", e.Message);
        }
        using var authorised = new HubDownloader(hub.Endpoint, "secret");
        await authorised.DownloadAsync(Id, Target);
        Assert.True(File.Exists(Path.Combine(Target, "config.json")));
        Assert.Contains(hub.Requests, r => r.EndsWith("| Bearer secret"));
    }

    [Fact]
    public async Task Not_found_names_the_model_and_the_endpoint()
    {
        using var downloader = new HubDownloader(hub.Endpoint);
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => downloader.DownloadAsync("Qwen/Qwen3-404B", Target));
        Assert.Contains("Qwen/Qwen3-404B was not found on " + hub.Endpoint, e.Message);
        Assert.Contains("HTTP 404", e.Message);
        Assert.False(Directory.Exists(Target));
    }

    [Fact]
    public async Task A_repository_without_safetensors_is_refused()
    {
        var files = hub.AddModel(Id);
        foreach (var k in files.Keys.Where(k => k.EndsWith(".safetensors")).ToList()) files.Remove(k);
        using var downloader = new HubDownloader(hub.Endpoint);
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => downloader.DownloadAsync(Id, Target));
        Assert.Contains("no .safetensors weights", e.Message);
    }

    [Fact]
    public async Task An_unreachable_endpoint_is_a_clear_error()
    {
        // Bind and release a port so nothing listens on it.
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var downloader = new HubDownloader($"http://127.0.0.1:{port}");
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => downloader.DownloadAsync(Id, Target));
        Assert.Contains($"cannot reach the Hugging Face Hub at http://127.0.0.1:{port} to get {Id}", e.Message);
    }

    [Fact]
    public async Task Resolve_downloads_into_the_models_folder_when_the_model_is_nowhere_else()
    {
        hub.AddModel(Id);
        var sources = new ModelSources(dir.FullName, Path.Combine(dir.FullName, "empty-cache"), hub.Endpoint);
        var folder = await ModelResolver.ResolveAsync(Id, sources);
        Assert.Equal(Target, folder);
        Assert.True(File.Exists(Path.Combine(folder, "tokenizer.json")));
        // Now local: resolving again asks the Hub nothing.
        var requests = hub.Requests.Count;
        Assert.Equal(Target, await ModelResolver.ResolveAsync(Id, sources));
        Assert.Equal(requests, hub.Requests.Count);
    }

    [Fact]
    public void Selects_config_tokenizer_and_safetensors_with_config_last()
    {
        var selected = HubDownloader.SelectFiles(["README.md", "config.json", "model.safetensors", "tokenizer.json", "merges.txt",
            "vocab.json", "onnx/model.safetensors", "generation_config.json", "tokenizer_config.json", "pytorch_model.bin"]);
        Assert.Equal(["generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"], selected);
    }
}
