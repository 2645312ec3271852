// The inference process's web server (`anneal inference run`): the OpenAI-compatible /v1
// endpoints over a ModelCatalog, on a loopback port. Run alone it serves the models given on the
// command line, to callers holding --api-key (or anyone on this machine without one); started by
// `anneal serve` it receives the process key in ANNEAL_INFERENCE_KEY and serves whatever folders
// the control plane resolved for the caller (X-Anneal-Model-Dir / X-Anneal-Adapter-Dir).
using System.Text.Json.Nodes;
using Anneal.Inference.Engine;
using Anneal.Inference.OpenAi;
using Anneal.Training;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Anneal.Inference;

public sealed record InferenceOptions
{
    /// <summary>"http://127.0.0.1:0" picks a free port.</summary>
    public string Urls { get; init; } = "http://127.0.0.1:8001";
    /// <summary>Bearer key callers must send; null: no key needed.</summary>
    public string? ApiKey { get; init; }
    /// <summary>Honour the control plane's folder headers (needs ApiKey).</summary>
    public bool RouteByHeaders { get; init; }
    public IReadOnlyList<ModelTarget> Models { get; init; } = [];
    public EngineOptions Engine { get; init; } = new();
    public LogLevel LogLevel { get; init; } = LogLevel.Warning;
    /// <summary>Opens a base folder's engine in place of the model's own (tests drive the /v1 layer with fixed answers); null: the real engines.</summary>
    public Func<string, ModelTarget, IGenerationEngine>? OpenEngine { get; init; }
}

public static class InferenceHost
{
    public const string ModelDirHeader = "X-Anneal-Model-Dir";
    public const string AdapterDirHeader = "X-Anneal-Adapter-Dir";
    public const string BaseModelHeader = "X-Anneal-Base-Model";
    /// <summary>"true": the adapter is a QLoRA one; load the base in NF4.</summary>
    public const string Nf4BaseHeader = "X-Anneal-Nf4-Base";
    public const string KeyEnvironmentVariable = "ANNEAL_INFERENCE_KEY";

    public static async Task<RunningInference> StartAsync(InferenceOptions options, CancellationToken ct = default)
    {
        if (options.RouteByHeaders && options.ApiKey is null)
            throw new ArgumentException("routing by headers needs an API key", nameof(options));
        var catalog = new ModelCatalog(options.Models, options.Engine, options.OpenEngine);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = typeof(InferenceHost).Assembly.GetName().Name });
        builder.WebHost.UseUrls(options.Urls);
        builder.Logging.SetMinimumLevel(options.LogLevel);
        var app = builder.Build();

        ModelTarget Resolve(HttpContext http, string model)
        {
            var headers = http.Request.Headers;
            if (options.RouteByHeaders && headers[ModelDirHeader].ToString() is { Length: > 0 } dir)
                return new ModelTarget(model, dir, headers[AdapterDirHeader].ToString() is { Length: > 0 } a ? a : null,
                    headers[BaseModelHeader].ToString() is { Length: > 0 } b ? b : null, headers[Nf4BaseHeader].ToString() == "true");
            return catalog.Find(model) ?? throw OpenAiError.ModelNotFound(model);
        }

        // Every /v1 answer is OpenAI-shaped, errors included.
        app.Use(async (http, next) =>
        {
            if (!http.Request.Path.StartsWithSegments("/v1")) { await next(http); return; }
            try
            {
                if (options.ApiKey is { } key && http.Request.Headers.Authorization.ToString() != "Bearer " + key)
                    throw OpenAiError.Unauthorized(http.Request.Headers.Authorization.Count == 0
                        ? "Missing API key: send 'Authorization: Bearer <key>'."
                        : "Invalid API key.");
                await next(http);
            }
            catch (OpenAiError e) when (!http.Response.HasStarted) { await e.WriteAsync(http.Response); }
            catch (Exception e) when (!http.Response.HasStarted && e is not OperationCanceledException)
            {
                await OpenAiError.Server($"{e.GetType().Name}: {e.Message}").WriteAsync(http.Response);
            }
        });
        app.MapGet("/health", () => Results.Ok(new { status = "ok" }));
        app.MapGet("/v1/models", () => Results.Text(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(catalog.Models.Select(m => (JsonNode)new JsonObject
            {
                ["id"] = m.Id, ["object"] = "model", ["created"] = 0, ["owned_by"] = "anneal",
                ["root"] = m.AdapterDir ?? m.BaseDir, ["parent"] = m.AdapterDir is null ? null : m.BaseDir,
            }).ToArray()),
        }.ToJsonString(), "application/json"));
        app.MapPost("/v1/chat/completions", (HttpContext http) => Completions.Chat(http, Resolve, catalog));
        app.MapPost("/v1/completions", (HttpContext http) => Completions.Text(http, Resolve, catalog));
        // Engine counters, for tests and benchmarks: decode steps, rows per step, adapters loaded.
        app.MapGet("/v1/engine/stats", () => Results.Text(new JsonObject
        {
            ["engines"] = new JsonArray(catalog.LoadedEngines.Select(e => (JsonNode)new JsonObject
            {
                ["model_dir"] = e.ModelDir, ["device"] = e.DeviceName, ["max_batch"] = e.MaxBatch, ["max_model_len"] = e.MaxModelLength,
                ["images"] = e.AcceptsImages, ["nf4_base"] = (e as ServingEngine)?.Nf4Base,
                ["decode_steps"] = (e as ServingEngine)?.DecodeSteps, ["decode_rows"] = (e as ServingEngine)?.DecodeRows,
                ["adapter_loads"] = (e as ServingEngine)?.AdapterLoads,
                ["adapters_loaded"] = new JsonArray(((e as ServingEngine)?.LoadedAdapters ?? []).Select(a => (JsonNode)a).ToArray()),
            }).ToArray()),
        }.ToJsonString(), "application/json"));

        await app.StartAsync(ct);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        var stop = new Lazy<Task>(async () =>
        {
            await app.StopAsync();
            await app.DisposeAsync();
            catalog.Dispose();
        });
        return new RunningInference { BaseUrl = address, Catalog = catalog, Stop = () => new ValueTask(stop.Value) };
    }
}

public sealed class RunningInference : IAsyncDisposable
{
    /// <summary>e.g. "http://127.0.0.1:45123" (the OpenAI base URL is this + "/v1").</summary>
    public required string BaseUrl { get; init; }
    public required ModelCatalog Catalog { get; init; }
    public required Func<ValueTask> Stop { get; init; }
    public ValueTask DisposeAsync() => Stop();
}
