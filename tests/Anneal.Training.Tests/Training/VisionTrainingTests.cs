// The vision recipe on the tiny Qwen3-VL model, on CPU: the spec's multimodal records (data: URI,
// a path inside the dataset's folder, a legacy top-level `images` record, a turn with two images)
// train with the loss falling; per_device_batch is clamped to 1 with accumulation raised (an event);
// the tower stays frozen; the result is a Qwen3-VL folder that loads back; bad images fail with the
// line and field.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Training.Checkpoints;
using SkiaSharp;
using TorchSharp;
using Xunit.Abstractions;

namespace Anneal.Training.Tests.Training;

public sealed class VisionTrainingTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-vision-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    public static readonly (string Name, SKColor Color)[] Colours =
        [("red", new SKColor(220, 30, 30)), ("green", new SKColor(30, 200, 40)), ("blue", new SKColor(30, 40, 220)), ("yellow", new SKColor(230, 220, 30))];

    /// <summary>A w×h PNG filled with one colour, with a darker diagonal so it is not uniform.</summary>
    public static byte[] Png(SKColor colour, int w = 70, int h = 50)
    {
        using var bitmap = new SKBitmap(w, h);
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
                bitmap.SetPixel(x, y, Math.Abs(x - y) < 3 ? new SKColor((byte)(colour.Red / 2), (byte)(colour.Green / 2), (byte)(colour.Blue / 2)) : colour);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    static JsonObject Part(string url) => new() { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } };
    static JsonObject Text(string text) => new() { ["type"] = "text", ["text"] = text };

    public static string WriteDataset(string dir)
    {
        var lines = new List<JsonObject>();
        foreach (var (name, colour) in Colours)
        {
            var png = Png(colour);
            File.WriteAllBytes(Path.Combine(dir, $"{name}.png"), png);
            var dataUri = "data:image/png;base64," + Convert.ToBase64String(png);
            JsonObject Record(JsonNode url) => new()
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = new JsonArray(url, Text("What colour is the square?")) },
                    new JsonObject { ["role"] = "assistant", ["content"] = $"The square is {name}." }),
            };
            lines.Add(Record(Part(dataUri)));
            lines.Add(Record(Part($"{name}.png")));
            lines.Add(new JsonObject
            {
                ["images"] = new JsonArray($"{name}.png"),
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = "Name the colour." },
                    new JsonObject { ["role"] = "assistant", ["content"] = $"It is {name}." }),
            });
        }
        lines.Add(new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Part("red.png"), Part("blue.png"), Text("Which two colours?")) },
                new JsonObject { ["role"] = "assistant", ["content"] = "Red and blue." }),
        });
        // Three images in one turn: the tiny model's max_images_per_message is 2, the third is left out.
        lines.Add(new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Part("red.png"), Part("green.png"), Part("blue.png"), Text("Colours?")) },
                new JsonObject { ["role"] = "assistant", ["content"] = "Red and green." }),
        });
        // An https image, as the server stores it beside the uploaded file after fetching it.
        lines.Add(new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Part("https://images.example/green.png"), Text("What colour is the square?")) },
                new JsonObject { ["role"] = "assistant", ["content"] = "The square is green." }),
        });
        var path = Path.Combine(dir, "vision.jsonl");
        File.WriteAllLines(path, lines.Select(l => l.ToJsonString()));
        Anneal.Core.Vision.StoredImages.Write(path, new Dictionary<string, byte[]> { ["https://images.example/green.png"] = Png(Colours[1].Color) });
        return path;
    }

    TrainerJobSpec Spec(string data, TrainingSettings settings) =>
        new("job_vision", ModelRegistry.TinyVisionModelId, TinyFixture.VisionModelDir, data, null, Path.Combine(dir, "out"), settings, null, "cpu", false, LocalImageFiles: true);

    [Fact]
    public async Task Tiny_vl_model_trains_with_the_tower_frozen_and_reloads()
    {
        var data = WriteDataset(dir);
        var settings = new TrainingSettings
        {
            TotalSteps = 16, PerDeviceBatch = 2, GradientAccumulationSteps = 1, LearningRate = 3e-3,
            LrScheduler = "constant", Seed = 3, SequenceLength = 256,
        };
        var (exit, events, stderr) = TinyFixture.Run(Spec(data, settings));
        output.WriteLine(stderr);
        Assert.True(exit == 0, string.Join("\n", events.Select(e => e.Message)));

        var adjusted = Assert.Single(events, e => e.Message.StartsWith("vision mode: per_device_batch"));
        Assert.Contains("per_device_batch 2 → 1 and gradient_accumulation_steps 1 → 2", adjusted.Message);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared).Data!;
        Assert.Equal(15, prepared["examples"]!.GetValue<int>());
        Assert.Equal(17, prepared["images"]!.GetValue<int>());
        var trimmed = Assert.Single(events, e => e.Message.Contains("beyond max_images_per_message"));
        Assert.Equal("debug", trimmed.Level);
        Assert.Contains("Line 14: 1 image(s) beyond max_images_per_message 2 left out", trimmed.Message);
        var losses = TinyFixture.Losses(events);
        output.WriteLine(string.Join(" ", losses.Select(l => l.ToString("F3"))));
        Assert.Equal(16, losses.Count);
        Assert.True(losses.TakeLast(4).Average() < losses.Take(4).Average() * 0.7, $"loss did not fall: {string.Join(", ", losses)}");

        var final = Path.Combine(dir, "out", "final");
        using var trained = VisionModelFolder.Load(final, torch.CPU, torch.ScalarType.Float32);
        using var original = VisionModelFolder.Load(TinyFixture.VisionModelDir, torch.CPU, torch.ScalarType.Float32);
        var before = original.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in trained.named_parameters())
        {
            var same = TestTensors.Same(before[name], p);
            if (name.StartsWith("model.visual.")) Assert.True(same, $"{name} changed although the tower is frozen");
            else if (name.Contains("layers.0.self_attn.q_proj")) Assert.False(same, $"{name} did not train");
        }
        Assert.True(File.Exists(Path.Combine(final, "preprocessor_config.json")));

        // The trained model answers about an image, the way `anneal generate --image` does.
        var answer = new StringWriter();
        var code = await TrainerProcess.GenerateAsync(final, "What colour is the square?", 12, answer, new StringWriter(), default, [Path.Combine(dir, "blue.png")]);
        output.WriteLine($"answer: {answer}");
        Assert.Equal(0, code);
        Assert.StartsWith("The square is", answer.ToString().Trim());
    }

    [Fact]
    public void Cached_generation_equals_recomputing_the_whole_sequence()
    {
        using var model = VisionModelFolder.Load(TinyFixture.VisionModelDir, torch.CPU, torch.ScalarType.Float32);
        var tokenizer = Trainer.LoadTokenizer(TinyFixture.VisionModelDir);
        var processor = Anneal.Training.Vision.ImageProcessorConfig.Load(TinyFixture.VisionModelDir);
        var image = Anneal.Core.Vision.ImageDecoder.TryDecode(Png(Colours[1].Color, 90, 40), out _)!;
        var (ids, images) = VisionGeneration.Prompt(tokenizer, model.Config, processor, "Describe it.", [image]);
        var grid = images[0].Grid;
        var cached = VisionGeneration.Greedy(model, ids, images, 2, 8, new HashSet<int>());

        // Reference: each step recomputes the full sequence with positions from the 3-D rule.
        var (_, again) = VisionGeneration.Prompt(tokenizer, model.Config, processor, "Describe it.", [image]);
        using var noGrad = torch.no_grad();
        using var features = model.ImageFeatures(again[0].Patches, [grid]);
        var sequence = ids.ToList();
        var recomputed = new List<int>();
        for (var i = 0; i < 8; i++)
        {
            var next = 0;
            var (pos, _) = Anneal.Training.Model.MRope.Compute(sequence.ToArray(), [grid], ref next, model.Config.ImageTokenId, 2);
            var logits = model.call(new Anneal.Training.Model.VisionLanguageInputs(
                torch.tensor(sequence.Select(x => (long)x).ToArray()).view(1, -1), torch.tensor(pos).view(3, 1, -1), null, features));
            var token = (int)logits[0, -1].argmax().item<long>();
            recomputed.Add(token);
            sequence.Add(token);
        }
        Assert.Equal(recomputed, cached);
    }

    [Fact]
    public void Lora_trains_adapters_on_the_language_model_only()
    {
        var data = WriteDataset(dir);
        var settings = new TrainingSettings
        {
            Mode = TrainingModes.Lora, TotalSteps = 3, PerDeviceBatch = 1, LearningRate = 1e-2, Seed = 3, SequenceLength = 256,
            Lora = new LoraSettings(4, 8, 0.0, ["q_proj", "v_proj"]),
        };
        var (exit, events, _) = TinyFixture.Run(Spec(data, settings));
        Assert.True(exit == 0, string.Join("\n", events.Select(e => e.Message)));
        var adapter = SafetensorsFile.Open(Path.Combine(dir, "out", "final", "adapter", "adapter_model.safetensors"));
        Assert.Equal(4 * 2 * 2, adapter.Entries.Count);                        // 4 layers × (q, v) × (A, B)
        Assert.All(adapter.Entries.Keys, k => Assert.StartsWith("base_model.model.model.language_model.layers.", k));
        using var merged = VisionModelFolder.Load(Path.Combine(dir, "out", "final"), torch.CPU, torch.ScalarType.Float32);
    }

    [Fact]
    public void Qlora_is_refused_for_a_vision_model_instead_of_training_another_mode()
    {
        var data = WriteDataset(dir);
        var (exit, events, _) = TinyFixture.Run(Spec(data, new TrainingSettings { Mode = TrainingModes.Qlora, TotalSteps = 1 }));
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Contains("\"qlora\" is not yet supported for Qwen3-VL", failed.Message);
        Assert.DoesNotContain(events, e => e.Type == EventTypes.Progress);
    }

    [Fact]
    public void A_server_upload_reads_no_image_file_but_its_own_stored_ones()
    {
        // The layout of the server's files/ folder: another dataset's fetched image and a loose file beside this one.
        var png = Png(Colours[0].Color);
        var hash = Anneal.Core.Vision.StoredImages.Hash(png);
        Anneal.Core.Vision.StoredImages.Write(Path.Combine(dir, "other"), new Dictionary<string, byte[]> { ["https://x.example/red.png"] = png });
        File.WriteAllBytes(Path.Combine(dir, "red.png"), png);
        var path = Path.Combine(dir, "upload.jsonl");
        void WriteWith(string url) => File.WriteAllText(path, new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Part(url), Text("Colour?")) },
                new JsonObject { ["role"] = "assistant", ["content"] = "Red." }),
        }.ToJsonString() + "\n");
        var upload = new TrainerJobSpec("job_vision", ModelRegistry.TinyVisionModelId, TinyFixture.VisionModelDir, path, null, Path.Combine(dir, "out"),
            new TrainingSettings { TotalSteps = 1, SequenceLength = 128 }, null, "cpu", false);
        Assert.False(upload.LocalImageFiles);
        foreach (var url in new[] { $"other.images/{hash}", "red.png", hash, $"../{Path.GetFileName(dir)}/red.png" })
        {
            WriteWith(url);
            var (exit, events, _) = TinyFixture.Run(upload);
            Assert.Equal(TrainerProcess.ExitUserError, exit);
            var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
            Assert.Contains(url.StartsWith("..") ? "leaves the dataset folder" : $"Line 1: messages[0].content[0]: the local image path \"{url}\" names no image stored with this dataset", failed.Message);
            Assert.DoesNotContain(events, e => e.Type == EventTypes.Progress);
        }
        // The dataset's own stored image, named by its content hash, is read.
        WriteWith(hash);
        Anneal.Core.Vision.StoredImages.Write(path, new Dictionary<string, byte[]> { ["https://x.example/red.png"] = png });
        var (ok, okEvents, err) = TinyFixture.Run(upload);
        Assert.True(ok == 0, err + string.Join("\n", okEvents.Select(e => e.Message)));
        Assert.Equal(1, Assert.Single(okEvents, e => e.Type == EventTypes.DataPrepared).Data!["images"]!.GetValue<int>());
    }

    [Theory]
    [InlineData("missing.png", "Line 1: messages[0].content[0]: the image file \"missing.png\" was not found")]
    [InlineData("data:image/png;base64,aGVsbG8gd29ybGQ=", "Line 1: messages[0].content[0]: not a PNG, JPEG, WebP or GIF image")]
    public void Bad_images_fail_with_the_line_and_field(string url, string expected)
    {
        var path = Path.Combine(dir, "bad.jsonl");
        File.WriteAllText(path, new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(Part(url), Text("?")) },
                new JsonObject { ["role"] = "assistant", ["content"] = "No." }),
        }.ToJsonString() + "\n");
        var (exit, events, _) = TinyFixture.Run(Spec(path, new TrainingSettings { TotalSteps = 1 }));
        Assert.NotEqual(0, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Contains(expected, failed.Message);
    }
}
