// A small Hugging Face Hub on a loopback port for the download tests, speaking the same protocol:
//   GET /api/models/{org}/{name}/revision/main   → {"sha", "siblings": [{"rfilename"}]}
//   GET /{org}/{name}/resolve/main/{file}        → small files directly (ETag = a 40-hex git id);
//       LFS files: 302 to /cdn/... with X-Linked-Etag = sha256 and X-Linked-Size
//   GET /cdn/{org}/{name}/{file}                 → the bytes, honouring Range
using System.Collections.Concurrent;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Net.Http.Headers;

namespace Anneal.Core.Tests.Models;

sealed class FakeHub : IAsyncDisposable
{
    /// <summary>A file of a repository; Lfs files redirect to the CDN and advertise a sha256.</summary>
    public sealed record HubFile(byte[] Bytes, bool Lfs, string? AdvertisedSha256 = null);

    public ConcurrentDictionary<string, Dictionary<string, HubFile>> Repos { get; } = new();
    public string? RequiredToken { get; set; }
    /// <summary>One line per request: "METHOD path | range | auth".</summary>
    public ConcurrentQueue<string> Requests { get; } = new();
    public string Endpoint { get; private set; } = "";

    WebApplication? app;

    public static async Task<FakeHub> StartAsync()
    {
        var hub = new FakeHub();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Use(async (ctx, next) =>
        {
            hub.Requests.Enqueue($"{ctx.Request.Method} {ctx.Request.Path} | {ctx.Request.Headers.Range} | {ctx.Request.Headers.Authorization}");
            await next();
        });
        app.MapGet("/api/models/{org}/{name}/revision/main", (HttpContext ctx, string org, string name) =>
        {
            if (hub.Denied(ctx)) return Results.StatusCode(401);
            if (!hub.Repos.TryGetValue($"{org}/{name}", out var files)) return Results.NotFound(new { error = "Repository not found" });
            return Results.Json(new { id = $"{org}/{name}", sha = new string('a', 40), siblings = files.Keys.Select(f => new { rfilename = f }) });
        });
        app.MapGet("/{org}/{name}/resolve/main/{file}", (HttpContext ctx, string org, string name, string file) =>
        {
            if (hub.Denied(ctx)) return Results.StatusCode(401);
            if (!hub.Repos.TryGetValue($"{org}/{name}", out var files) || !files.TryGetValue(file, out var f)) return Results.NotFound();
            if (!f.Lfs)
                return Results.File(f.Bytes, "application/octet-stream",
                    entityTag: new EntityTagHeaderValue("\"" + Convert.ToHexStringLower(SHA1.HashData(f.Bytes)) + "\""), enableRangeProcessing: true);
            ctx.Response.Headers["X-Linked-Etag"] = "\"" + (f.AdvertisedSha256 ?? Convert.ToHexStringLower(SHA256.HashData(f.Bytes))) + "\"";
            ctx.Response.Headers["X-Linked-Size"] = f.Bytes.Length.ToString();
            return Results.Redirect($"/cdn/{org}/{name}/{file}");
        });
        app.MapGet("/cdn/{org}/{name}/{file}", (string org, string name, string file) =>
            hub.Repos.TryGetValue($"{org}/{name}", out var files) && files.TryGetValue(file, out var f)
                ? Results.File(f.Bytes, "application/octet-stream", enableRangeProcessing: true)
                : Results.NotFound());
        await app.StartAsync();
        hub.app = app;
        hub.Endpoint = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return hub;
    }

    bool Denied(HttpContext ctx) => RequiredToken is not null && ctx.Request.Headers.Authorization != $"Bearer {RequiredToken}";

    /// <summary>A small Qwen3-like repository: config, tokenizer, two weight shards, and files to skip.</summary>
    public Dictionary<string, HubFile> AddModel(string id, int shardBytes = 300_000)
    {
        var rng = new Random(id.GetHashCode());
        byte[] Random(int n) { var b = new byte[n]; rng.NextBytes(b); return b; }
        byte[] Text(string s) => System.Text.Encoding.UTF8.GetBytes(s);
        var files = new Dictionary<string, HubFile>
        {
            ["config.json"] = new(Text("""{"model_type": "qwen3", "hidden_size": 8}"""), false),
            ["generation_config.json"] = new(Text("""{"eos_token_id": 1}"""), false),
            ["tokenizer.json"] = new(Text("""{"model": {"type": "BPE"}}"""), false),
            ["tokenizer_config.json"] = new(Text("""{"eos_token": "<|im_end|>"}"""), false),
            ["model.safetensors.index.json"] = new(Text("""{"weight_map": {}}"""), false),
            ["model-00001-of-00002.safetensors"] = new(Random(shardBytes), true),
            ["model-00002-of-00002.safetensors"] = new(Random(shardBytes / 3), true),
            ["README.md"] = new(Text("# readme"), false),
            ["pytorch_model.bin"] = new(Random(1000), true),
            ["onnx/model.safetensors"] = new(Random(100), true),
        };
        Repos[id] = files;
        return files;
    }

    public async ValueTask DisposeAsync()
    {
        if (app is not null) await app.DisposeAsync();
    }
}
