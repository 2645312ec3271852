using Anneal.Core.Models;

namespace Anneal.Core.Tests.Models;

public sealed class ModelResolverTests : IDisposable
{
    const string Id = "Qwen/Qwen3-0.6B";
    readonly DirectoryInfo dir = Directory.CreateTempSubdirectory("anneal-models-");

    public void Dispose() => dir.Delete(true);

    string Models => Path.Combine(dir.FullName, "models");
    string Hub => Path.Combine(dir.FullName, "hub");

    static string WithConfig(string folder)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), "{}");
        return folder;
    }

    /// <summary>An endpoint nothing listens on: a test that reaches it fails loudly.</summary>
    static readonly ModelSources NoHub = new(null, null, "http://127.0.0.1:9");

    [Fact]
    public void Finds_a_model_in_the_models_folder()
    {
        var folder = WithConfig(Path.Combine(Models, "Qwen", "Qwen3-0.6B"));
        Assert.Equal(folder, ModelResolver.FindLocal(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub }));
    }

    [Fact]
    public void A_models_folder_without_config_json_does_not_count()
    {
        Directory.CreateDirectory(Path.Combine(Models, "Qwen", "Qwen3-0.6B"));
        Assert.Null(ModelResolver.FindLocal(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub }));
    }

    [Fact]
    public void Finds_the_snapshot_named_by_refs_main_in_the_hub_cache()
    {
        var repo = Path.Combine(Hub, "models--Qwen--Qwen3-0.6B");
        WithConfig(Path.Combine(repo, "snapshots", "1111"));
        var main = WithConfig(Path.Combine(repo, "snapshots", "2222"));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "2222\n");
        Directory.SetLastWriteTimeUtc(Path.Combine(repo, "snapshots", "1111"), DateTime.UtcNow.AddHours(1));

        Assert.Equal(main, ModelResolver.FindLocal(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub }));
    }

    [Fact]
    public void Without_refs_main_the_newest_snapshot_with_a_config_is_used()
    {
        var repo = Path.Combine(Hub, "models--Qwen--Qwen3-0.6B", "snapshots");
        var old = WithConfig(Path.Combine(repo, "old"));
        var recent = WithConfig(Path.Combine(repo, "recent"));
        Directory.CreateDirectory(Path.Combine(repo, "newest-but-empty"));
        Directory.SetLastWriteTimeUtc(old, DateTime.UtcNow.AddHours(-2));
        Directory.SetLastWriteTimeUtc(recent, DateTime.UtcNow.AddHours(-1));
        Assert.Equal(recent, ModelResolver.FindInHubCache(Hub, Id));
    }

    [Fact]
    public void The_models_folder_comes_before_the_hub_cache()
    {
        var models = WithConfig(Path.Combine(Models, "Qwen", "Qwen3-0.6B"));
        WithConfig(Path.Combine(Hub, "models--Qwen--Qwen3-0.6B", "snapshots", "abc"));
        Assert.Equal(models, ModelResolver.FindLocal(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub }));
    }

    [Fact]
    public async Task Resolve_returns_a_cached_model_without_contacting_the_hub()
    {
        var snapshot = WithConfig(Path.Combine(Hub, "models--Qwen--Qwen3-0.6B", "snapshots", "abc"));
        Assert.Equal(snapshot, await ModelResolver.ResolveAsync(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub }));
    }

    [Fact]
    public async Task Resolve_with_downloads_off_names_where_it_looked()
    {
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() =>
            ModelResolver.ResolveAsync(Id, NoHub with { ModelsDir = Models, HubCacheDir = Hub, AllowDownload = false }));
        Assert.Contains(Path.Combine(Models, "Qwen", "Qwen3-0.6B"), e.Message);
        Assert.Contains(Path.Combine(Hub, "models--Qwen--Qwen3-0.6B"), e.Message);
        Assert.Contains("downloads are switched off", e.Message);
    }

    [Fact]
    public async Task Resolve_without_a_models_folder_cannot_download()
    {
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => ModelResolver.ResolveAsync(Id, NoHub with { HubCacheDir = Hub }));
        Assert.Contains("no models folder is configured", e.Message);
    }

    [Fact]
    public async Task The_tiny_model_resolves_to_its_generated_folder()
    {
        Assert.Equal(Path.Combine(Models, "anneal", "tiny-qwen3"),
            await ModelResolver.ResolveAsync(ModelRegistry.TinyModelId, NoHub with { ModelsDir = Models }));
    }

    [Theory]
    [InlineData("Qwen3-0.6B")]
    [InlineData("../etc/passwd")]
    [InlineData("Qwen/../../x")]
    [InlineData("Qwen/Qwen3 0.6B")]
    [InlineData("a/b/c")]
    public async Task Ids_that_are_not_org_slash_name_are_rejected(string id)
    {
        Assert.False(ModelResolver.IsValidId(id));
        var e = await Assert.ThrowsAsync<ModelDownloadException>(() => ModelResolver.ResolveAsync(id, NoHub with { ModelsDir = Models }));
        Assert.Contains("is not a model id of the form Org/Name", e.Message);
    }
}
