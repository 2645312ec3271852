// The spec's vision workflow end to end on the tiny Qwen3-VL model, on CPU: `anneal train` uploads
// a multimodal JSONL (data: URIs in OpenAI image_url parts, an https URL served over TLS on
// loopback, local files packed by the CLI, legacy top-level `images` records, a turn with two
// images), the server fetches and stores the https image,  validates it and runs a real trainer process in vision mode to
// `succeeded` (with [model] image settings and train_vision = "merger", which the job records and
// the trainer applies), and `anneal generate --image` answers from the fine-tuned folder, and the
// same through the server's /v1 with the fine_tuned_model id.
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Anneal.Core.Vision;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using SkiaSharp;

namespace Anneal.Cli.Tests.EndToEnd;

[Collection("trainer")]
public class VisionJobTests
{
    static byte[] Png(SKColor colour)
    {
        using var bitmap = new SKBitmap(60, 44);
        bitmap.Erase(colour);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    static string DataUri(byte[] png) => "data:image/png;base64," + Convert.ToBase64String(png);
    static JsonObject Image(string url) => new() { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } };

    /// <summary>An https image server on loopback with a throwaway certificate for "localhost".</summary>
    static async Task<(WebApplication App, int Port)> StartImageServerAsync(string path, byte[] png)
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var selfSigned = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var cert = X509CertificateLoader.LoadPkcs12(selfSigned.Export(X509ContentType.Pfx), null);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(cert)));
        var app = builder.Build();
        app.MapGet(path, () => Results.Bytes(png, "image/png"));
        await app.StartAsync();
        return (app, new Uri(app.Urls.First()).Port);
    }

    static string Dataset(string? httpsUrl = null)
    {
        var lines = new List<string>();
        foreach (var (name, colour) in new[] { ("red", SKColors.Red), ("green", SKColors.Green), ("blue", SKColors.Blue) })
        {
            var uri = DataUri(Png(colour));
            lines.Add(new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "What colour is this?" }, Image(uri)) },
                    new JsonObject { ["role"] = "assistant", ["content"] = $"It is {name}." }),
            }.ToJsonString());
            lines.Add(new JsonObject
            {
                ["images"] = new JsonArray(uri),
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = "Name the colour." },
                    new JsonObject { ["role"] = "assistant", ["content"] = $"{name}" }),
            }.ToJsonString());
        }
        lines.Add(new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Image(DataUri(Png(SKColors.Red))), Image(DataUri(Png(SKColors.Blue))), new JsonObject { ["type"] = "text", ["text"] = "And these two?" }) },
                new JsonObject { ["role"] = "assistant", ["content"] = "Red and blue." }),
        }.ToJsonString());
        // Local files next to the dataset: `anneal train` packs them into the upload.
        lines.Add(new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Image("blue.png"), new JsonObject { ["type"] = "text", ["text"] = "What colour is this?" }) },
                new JsonObject { ["role"] = "assistant", ["content"] = "It is blue." }),
        }.ToJsonString());
        lines.Add(new JsonObject
        {
            ["images"] = new JsonArray("blue.png"),
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "Name the colour." },
                new JsonObject { ["role"] = "assistant", ["content"] = "blue" }),
        }.ToJsonString());
        // An https URL: the server fetches it once at upload and the trainer reads the stored copy.
        if (httpsUrl is not null)
            lines.Add(new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Image(httpsUrl), new JsonObject { ["type"] = "text", ["text"] = "What colour is this?" }) },
                    new JsonObject { ["role"] = "assistant", ["content"] = "It is green." }),
            }.ToJsonString());
        return string.Join("\n", lines) + "\n";
    }

    [Fact]
    public async Task Dry_run_shows_the_vision_mode_adjustments_and_missing_local_images_stop_the_upload()
    {
        using var box = new CliSandbox();
        box.Environment["BACKEND_BASE_URL"] = "http://127.0.0.1:9";
        box.Write("train.toml", Toml);
        box.Write("vision.jsonl", Dataset());
        File.WriteAllBytes(Path.Combine(box.Dir, "blue.png"), Png(SKColors.Blue));
        var dry = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--dry-run");
        Assert.True(dry.ExitCode == 0, dry.ToString());
        Assert.Contains("vision mode: per_device_batch 2 → 1 and gradient_accumulation_steps 1 → 2", dry.Err);
        Assert.Contains("\"vision_mode\"", dry.Out);

        File.Delete(Path.Combine(box.Dir, "blue.png"));
        var missing = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--dry-run");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("Line 8: messages[0].content[0]: image file", missing.Err);
        Assert.Contains("blue.png not found", missing.Err);
    }

    const string Toml = """
        [job]
        model = "anneal/tiny-qwen3-vl"
        data = "vision.jsonl"

        [training]
        mode = "full_finetune"

        [hyperparameters]
        total_steps = 4
        per_device_batch = 2
        learning_rate = 3e-3
        sequence_length = 256
        """;

    [Fact]
    public async Task Multimodal_dataset_trains_the_tiny_vl_model_to_succeeded_and_answers_about_an_image()
    {
        var green = Png(SKColors.Green);
        var (images, port) = await StartImageServerAsync("/green.png", green);
        await using var _ = images;
        await using var server = await TestServer.StartAsync(runJobs: true, imageTestHosts: new HashSet<string> { "localhost" });
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Toml.Replace("mode = \"full_finetune\"", "mode = \"full_finetune\"\ntrain_vision = \"merger\"\n\n[model]\nmin_pixels = 1024\nmax_pixels = 4096"));
        box.Write("vision.jsonl", Dataset($"https://localhost:{port}/green.png"));
        File.WriteAllBytes(Path.Combine(box.Dir, "blue.png"), Png(SKColors.Blue));

        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains("note: packed 2 local image files into the upload", result.Err);
        Assert.Contains("vision mode: per_device_batch 2 → 1 and gradient_accumulation_steps 1 → 2", result.Out);
        Assert.Contains("sft.progress step 4/4", result.Out);
        Assert.Contains("; 11 images", result.Out);   // 3 data: parts, 3 legacy, 2 in one turn, 2 packed files, 1 https
        // The https image was fetched once and stored beside the upload; the trainer read that copy.
        var stored = Directory.GetDirectories(Path.Combine(server.DataDir, "files"), "*" + ".images").Single();
        Assert.Equal(green, File.ReadAllBytes(Path.Combine(stored, StoredImages.Hash(green))));
        var id = result.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();
        Assert.Contains("vision mergers in full", result.Out);
        using (var http = new HttpClient())
        {
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", server.ApiKey);
            var settings = JsonNode.Parse(await http.GetStringAsync($"{server.BaseUrl}/api/learning/jobs/{id}/config"))!["settings"]!["training"]!;
            Assert.Equal("merger", settings["train_vision"]!.GetValue<string>());
            Assert.Equal(4096, settings["vision"]!["max_pixels"]!.GetValue<int>());
            Assert.Equal(1024, settings["vision"]!["min_pixels"]!.GetValue<int>());
        }
        var final = Path.Combine(server.DataDir, "jobs", id, "output", "final");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(final, "config.json")))!;
        Assert.Equal("qwen3_vl", config["model_type"]!.GetValue<string>());

        var answer = await box.RunAsync("generate", "--model", final, "--image", "blue.png", "--prompt", "What colour is this?", "--max-new-tokens", "6");
        Assert.True(answer.ExitCode == 0, answer.ToString());
        // (What four steps teach a random 1M-parameter model varies; VisionTrainingTests checks the answer's words.)
        Assert.DoesNotContain("error", answer.Err);

        // The fine_tuned_model id answers the same through the server's /v1 (the image sent as a data: URI).
        var ftId = result.Out.Split('\n').First(l => l.StartsWith("fine_tuned_model: ", StringComparison.Ordinal))["fine_tuned_model: ".Length..].Trim();
        var remote = await box.RunAsync("generate", "--model", ftId, "--image", "blue.png", "--prompt", "What colour is this?", "--max-new-tokens", "6");
        Assert.True(remote.ExitCode == 0, remote.ToString());
        Assert.Equal(answer.Out, remote.Out);
    }
}
