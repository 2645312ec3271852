// `anneal models export ID --out DIR [--format merged|adapter]`: download a fine-tuned model's
// Hugging Face folder from the server (GET /api/learning/model-export, a tar stream) into DIR,
// and say how to serve it with vLLM, SGLang or transformers.
using System.CommandLine;
using System.Formats.Tar;
using Anneal.Cli.Http;

namespace Anneal.Cli.Models;

public static class ExportCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var model = new Argument<string>("model") { Description = "The fine_tuned_model id (ft:…, fft:…)" };
        var output = new Option<string>("--out") { Description = "Folder to write (created; must be empty if it exists)", Required = true };
        var format = new Option<string>("--format") { Description = "merged: a full Hugging Face folder; adapter: a LoRA job's PEFT adapter folder", DefaultValueFactory = _ => "merged" };
        format.AcceptOnlyFromAmong("merged", "adapter");
        var command = new Command("export", "Download a fine-tuned model as a Hugging Face folder (for vLLM, SGLang, transformers)") { model, output, format };
        command.SetApiAction(ctx, shared, json: false, async (p, client, ct) =>
        {
            var dir = ctx.FullPath(p.GetValue(output)!);
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            {
                ctx.Error.WriteLine($"error: --out {dir}: the folder is not empty; give a new or empty folder");
                return ExitCodes.Usage;
            }
            var id = p.GetValue(model)!;
            var fmt = p.GetValue(format)!;
            using var response = await client.ExportModelAsync(id, fmt, ct);
            var tmp = dir + ".partial-" + Environment.ProcessId;
            Directory.CreateDirectory(tmp);
            try
            {
                await using (var stream = await response.Content.ReadAsStreamAsync(ct))
                    await TarFile.ExtractToDirectoryAsync(stream, tmp, overwriteFiles: false, ct);
                if (Directory.Exists(dir)) Directory.Delete(dir);
                Directory.Move(tmp, dir);
            }
            finally
            {
                if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            }
            var files = Directory.GetFiles(dir).Select(f => new FileInfo(f)).OrderBy(f => f.Name).ToList();
            ctx.Out.WriteLine($"Exported {id} ({fmt}) to {dir}:");
            foreach (var f in files) ctx.Out.WriteLine($"  {f.Name}  {f.Length:N0} bytes");
            ctx.Out.WriteLine("Serve it elsewhere, e.g.:");
            if (fmt == "merged")
            {
                ctx.Out.WriteLine($"  vllm serve {dir} --served-model-name {id}");
                ctx.Out.WriteLine($"  python -m sglang.launch_server --model-path {dir}");
                ctx.Out.WriteLine($"  python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; m = AutoModelForCausalLM.from_pretrained('{dir}'); t = AutoTokenizer.from_pretrained('{dir}')\"");
            }
            else
            {
                ctx.Out.WriteLine($"  vllm serve BASE_MODEL --enable-lora --lora-modules {id.Replace(':', '_').Replace('/', '_')}={dir}");
                ctx.Out.WriteLine($"  python -c \"from peft import AutoPeftModelForCausalLM; m = AutoPeftModelForCausalLM.from_pretrained('{dir}')\"");
            }
            return ExitCodes.Ok;
        });
        return command;
    }
}
