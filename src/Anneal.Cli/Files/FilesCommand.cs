// `anneal files upload|get|check`: dataset files. `check` validates locally, in one streaming pass
// (Core's DatasetCheck), and sends nothing.
using System.CommandLine;
using Anneal.Cli.Http;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Models;

namespace Anneal.Cli.Files;

public static class FilesCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var path = new Argument<string>("path") { Description = "A JSONL chat dataset" };
        var model = new Option<string?>("--model") { Description = "Check for this base model (Qwen3-VL models accept images)" };

        var check = new Command("check", "Validate a JSONL dataset locally (nothing is sent)") { path, model, shared.Json };
        check.SetAction(p =>
        {
            var (report, code) = Validate(ctx, p.GetValue(path)!, p.GetValue(model));
            if (report is null) return code;
            if (p.GetValue(shared.Json)) ctx.WriteJson(report);
            else if (report.IsValid) ctx.Out.WriteLine($"OK: {report.NumExamples} examples");
            return code;
        });

        var upload = new Command("upload", "Validate a dataset locally, then upload it (purpose fine-tune)") { path, model };
        upload.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var (report, code) = Validate(ctx, p.GetValue(path)!, p.GetValue(model));
            if (report is null || code != ExitCodes.Ok) return code;
            var full = ctx.FullPath(p.GetValue(path)!);
            // Local image files travel inside the upload (as data: URIs), as with `anneal train`:
            // the server reads no paths.
            byte[]? packed = null;
            if (report.ExamplesWithImages > 0)
            {
                var problems = new List<ErrorItem>();
                int count;
                using (var original = File.OpenRead(full))
                    packed = Train.LocalImages.Inline(original, Path.GetDirectoryName(full)!, problems, out count);
                if (problems.Count > 0)
                {
                    ctx.Error.WriteLine($"error: {full}: {problems.Count} image file problem{(problems.Count == 1 ? "" : "s")}; nothing was uploaded:");
                    foreach (var e in problems.Take(20)) ctx.Error.WriteLine($"  {e}");
                    return ExitCodes.Usage;
                }
                if (packed is not null) ctx.Error.WriteLine($"note: packed {count} local image file{(count == 1 ? "" : "s")} into the upload");
            }
            FileObject file;
            await using (Stream stream = packed is null ? File.OpenRead(full) : new MemoryStream(packed, writable: false))
            {
                try
                {
                    file = await client.UploadFileAsync(stream, Path.GetFileName(full), FilePurpose.FineTune, ct);
                }
                catch (ApiException e) when (e.Status == System.Net.HttpStatusCode.RequestEntityTooLarge)
                {
                    return ApiErrors.ReportUpload(ctx, e, Path.GetFileName(full), stream.Length);
                }
            }
            while (file.Status == FileStatus.Processing)
            {
                await Task.Delay(500, ct);
                file = await client.GetFileAsync(file.Id, ct);
            }
            Print(ctx, file, p.GetValue(shared.Json));
            return file.Status == FileStatus.Ready ? ExitCodes.Ok : ExitCodes.Usage;
        });

        var id = new Argument<string>("file-id") { Description = "The file's id (file_...)" };
        var get = new Command("get", "Show an uploaded file: status, examples, tokens, validation errors") { id };
        get.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            Print(ctx, await client.GetFileAsync(p.GetValue(id)!, ct), p.GetValue(shared.Json));
            return ExitCodes.Ok;
        });

        var limit = new Option<int>("--limit") { Description = "At most this many files, newest first", DefaultValueFactory = _ => 20 };
        var list = new Command("list", "List your organisation's uploaded files") { limit };
        list.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var files = await client.ListFilesAsync(p.GetValue(limit), ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(files);
            else if (files.Data.Count == 0) ctx.Out.WriteLine("No files.");
            else
                foreach (var f in files.Data)
                    ctx.Out.WriteLine($"{f.Id}  {f.Status,-10}  {f.NumExamples?.ToString() ?? "-",6} examples  {f.Bytes,10} bytes  {f.Filename}");
            return ExitCodes.Ok;
        });

        return new Command("files", "Check, upload, list and inspect dataset files") { check, upload, list, get };
    }

    static (DatasetReport? Report, int Code) Validate(CliContext ctx, string given, string? model)
    {
        var full = ctx.FullPath(given);
        if (Directory.Exists(full))
        {
            ctx.Error.WriteLine($"error: {given}: {full} is a directory; expected a JSONL file");
            return (null, ExitCodes.Usage);
        }
        if (!File.Exists(full))
        {
            ctx.Error.WriteLine($"error: {given}: file not found ({full})");
            return (null, ExitCodes.Usage);
        }
        // With no --model, or one this build does not know, images are accepted (DESIGN.md §8): the
        // server decides with the model it trains. A known text-only model rejects them here.
        var known = model is null ? null : ModelRegistry.Find(model);
        var vision = known?.SupportsVision ?? true;
        // Local image paths are checked here and packed into the upload.
        var options = new DatasetValidationOptions(20, vision, Math.Max(1, known?.MaxImagesPerMessage ?? 64), LocalImagePaths: true);
        var report = DatasetValidator.ValidateFile(full, options);
        if (report.IsValid && known is null && report.ExamplesWithImages > 0)
            ctx.Error.WriteLine(model is null
                ? $"note: {given} contains images; images need a vision model (e.g. --model Qwen/Qwen3-VL-8B-Instruct)"
                : $"note: {given} contains images; model '{model}' is not in the built-in list, so the server decides whether it accepts them");
        if (!report.IsValid)
        {
            ctx.Error.WriteLine(report.TotalErrors == 0 ? $"error: {full} has no records" : $"error: {full}: {report.TotalErrors} error{(report.TotalErrors == 1 ? "" : "s")}");
            foreach (var e in report.Errors) ctx.Error.WriteLine($"  {e}");
            if (report.TotalErrors > report.Errors.Count) ctx.Error.WriteLine($"  ... {report.TotalErrors} errors in total, first {report.Errors.Count} shown");
        }
        return (report, report.IsValid ? ExitCodes.Ok : ExitCodes.Usage);
    }

    static void Print(CliContext ctx, FileObject file, bool json)
    {
        if (json)
        {
            ctx.WriteJson(file);
            return;
        }
        ctx.Out.WriteLine($"id: {file.Id}");
        ctx.Out.WriteLine($"filename: {file.Filename}");
        ctx.Out.WriteLine($"status: {file.Status}");
        ctx.Out.WriteLine($"bytes: {file.Bytes}");
        ctx.Out.WriteLine($"sha256: {file.Sha256}");
        if (file.NumExamples is { } n) ctx.Out.WriteLine($"num_examples: {n}");
        if (file.NumTokens is { } t) ctx.Out.WriteLine($"num_tokens: {t}");
        foreach (var e in file.Errors ?? []) ctx.Out.WriteLine($"error: {e}");
    }
}
