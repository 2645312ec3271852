// The spec's vision workflow end to end on the tiny Qwen3-VL model, on CPU: `anneal train` uploads
// a multimodal JSONL (data: URIs in OpenAI image_url parts, a legacy top-level `images` record, a
// turn with two images), the server validates it and runs a real trainer process in vision mode to
// `succeeded`, and `anneal generate --image` answers from the fine-tuned folder.
using System.Text.Json.Nodes;
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

    static string Dataset()
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
        total_steps = 12
        per_device_batch = 2
        learning_rate = 3e-3
        sequence_length = 256
        """;

    [Fact]
    public async Task Multimodal_dataset_trains_the_tiny_vl_model_to_succeeded_and_answers_about_an_image()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", Toml);
        box.Write("vision.jsonl", Dataset());
        File.WriteAllBytes(Path.Combine(box.Dir, "blue.png"), Png(SKColors.Blue));

        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains("note: packed 2 local image files into the upload", result.Err);
        Assert.Contains("vision mode: per_device_batch 2 → 1 and gradient_accumulation_steps 1 → 2", result.Out);
        Assert.Contains("sft.progress step 12/12", result.Out);
        var id = result.Out.Split('\n').First(l => l.StartsWith("job_id: ", StringComparison.Ordinal))["job_id: ".Length..].Trim();
        var final = Path.Combine(server.DataDir, "jobs", id, "output", "final");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(final, "config.json")))!;
        Assert.Equal("qwen3_vl", config["model_type"]!.GetValue<string>());

        var answer = await box.RunAsync("generate", "--model", final, "--image", "blue.png", "--prompt", "What colour is this?", "--max-new-tokens", "6");
        Assert.True(answer.ExitCode == 0, answer.ToString());
        // (What twelve steps teach a random 1M-parameter model varies; VisionTrainingTests checks the answer's words.)
        Assert.DoesNotContain("error", answer.Err);
    }
}
