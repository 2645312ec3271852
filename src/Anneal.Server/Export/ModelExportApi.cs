// GET /api/learning/model-export?model=ID&format=merged|adapter: a fine-tuned model of the
// organisation as a tar stream of its Hugging Face folder, so it can be served elsewhere (vLLM,
// SGLang, transformers): `merged` is a full model folder (config.json, safetensors, tokenizer);
// `adapter` is a LoRA job's PEFT folder (adapter_config.json, adapter_model.safetensors), for
// peft/vLLM --lora-modules on the base model. The id travels in the query: ids contain slashes.
using System.Formats.Tar;
using Anneal.Core.Contracts;
using Anneal.Server.Auth;
using Anneal.Server.Http;
using Anneal.Server.Runner;
using Anneal.Server.Storage;

namespace Anneal.Server.Export;

public static class ModelExportApi
{
    public const string Merged = "merged", Adapter = "adapter";

    public static IEndpointRouteBuilder MapModelExportApi(this IEndpointRouteBuilder api)
    {
        api.MapGet("/learning/model-export", Export);
        return api;
    }

    static async Task<IResult> Export(string? model, string? format, HttpContext http, Db db, ServerOptions options)
    {
        if (string.IsNullOrEmpty(model))
            return Problems.Validation("model is required", [new ErrorItem(null, "model", "expected a fine_tuned_model id (ft:…, fft:…) of your organisation")]);
        format ??= Merged;
        if (format is not (Merged or Adapter))
            return Problems.Validation($"format \"{format}\" is not allowed", [new ErrorItem(null, "format", "expected \"merged\" (a full Hugging Face folder) or \"adapter\" (the PEFT LoRA folder)")]);
        var (path, error) = await ModelPaths.ResolveAsync(db, options with { AllowModelDownload = false }, http.Org(), model, _ => { }, http.RequestAborted);
        if (path is null) return Problems.NotFound("model", model + (error is null ? "" : $" ({error})"));

        // A LoRA job's model row points at final/merged; its adapter is final/ itself.
        string folder;
        if (format == Adapter)
        {
            var final = Path.GetDirectoryName(path.TrimEnd('/'));
            if (final is null || !File.Exists(Path.Combine(final, "adapter_config.json")))
                return Problems.Validation($"{model} has no LoRA adapter", [new ErrorItem(null, "format", "only LoRA (ft:) models have an adapter; export format \"merged\"")]);
            folder = final;
        }
        else
        {
            if (!File.Exists(Path.Combine(path, "config.json")))
                return Problems.Validation($"{model} has no merged model folder ({path} has no config.json)", [new ErrorItem(null, "format", "export format \"adapter\" and load it with peft on the base model")]);
            folder = path;
        }

        var files = Directory.GetFiles(folder).Where(f => !Path.GetFileName(f).StartsWith('.')).OrderBy(f => f, StringComparer.Ordinal).ToList();
        var name = model.Replace(':', '_').Replace('/', '_') + (format == Adapter ? "-adapter" : "");
        http.Response.ContentType = "application/x-tar";
        http.Response.Headers.ContentDisposition = $"attachment; filename=\"{name}.tar\"";
        http.Response.Headers["X-Anneal-Export-Format"] = format;
        await using (var tar = new TarWriter(http.Response.Body, TarEntryFormat.Pax, leaveOpen: true))
            foreach (var f in files)
                await tar.WriteEntryAsync(f, Path.GetFileName(f), http.RequestAborted);
        return Results.Empty;
    }
}
