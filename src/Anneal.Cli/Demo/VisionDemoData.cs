// The vision demo's material (`anneal demo --vision`): four small coloured pictures written as PNG
// files next to the dataset, a JSONL in the spec's OpenAI multimodal shape that refers to them by
// relative path (packed into the upload by `anneal train`) and, once each, as a data: URI, and a
// config for the built-in tiny Qwen3-VL model.
using System.Text.Json.Nodes;
using SkiaSharp;

namespace Anneal.Cli.Demo;

public static class VisionDemoData
{
    public const string Prompt = "What colour is the picture?";
    public static readonly (string Name, SKColor Colour)[] Colours =
        [("red", new SKColor(220, 30, 30)), ("green", new SKColor(30, 190, 50)), ("blue", new SKColor(30, 50, 220)), ("yellow", new SKColor(235, 220, 40))];

    public static string Answer(string colour) => $"The picture is {colour}.";

    /// <summary>A 72×56 picture of one colour with a white frame.</summary>
    public static byte[] Png(SKColor colour)
    {
        using var bitmap = new SKBitmap(72, 56);
        bitmap.Erase(SKColors.White);
        using (var canvas = new SKCanvas(bitmap))
        using (var paint = new SKPaint { Color = colour })
            canvas.DrawRect(6, 6, 60, 44, paint);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>Writes the pictures into `folder` and returns the JSONL text.</summary>
    public static string Write(string folder)
    {
        var lines = new List<string>();
        foreach (var (name, colour) in Colours)
        {
            var png = Png(colour);
            File.WriteAllBytes(Path.Combine(folder, $"{name}.png"), png);
            foreach (var url in new[] { $"{name}.png", "data:image/png;base64," + Convert.ToBase64String(png) })
                lines.Add(new JsonObject
                {
                    ["messages"] = new JsonArray(
                        new JsonObject
                        {
                            ["role"] = "user",
                            ["content"] = new JsonArray(
                                new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } },
                                new JsonObject { ["type"] = "text", ["text"] = Prompt }),
                        },
                        new JsonObject { ["role"] = "assistant", ["content"] = Answer(name) }),
                }.ToJsonString());
        }
        return string.Join("\n", lines) + "\n";
    }

    public static string Config(string model, string dataFile, int steps) => $"""
        # Vision demo config: the spec's sections, sized for the tiny Qwen3-VL model on CPU.
        [job]
        model = "{model}"
        data = "{dataFile}"

        [training]
        mode = "full_finetune"

        [hyperparameters]
        total_steps = {steps}
        per_device_batch = 4
        gradient_accumulation_steps = 1
        learning_rate = 3e-3
        lr_scheduler = "constant"
        sequence_length = 128
        seed = 7
        """;
}
