// Anneal's side of the Qwen3-VL parity check against transformers (bench/parity/hf_vl_parity.py
// writes the model folder, the example and the reference). Loads the folder with the trainer's
// loader (VisionModelFolder.Load) and:
//   - preprocesses the reference's PNGs with our image processor (preprocessor_config.json of the
//     folder) and compares grids and pixel values with the transformers processor's;
//   - runs the model on the reference's pixel_values and input_ids with our own 3-D positions
//     (MRope.Compute), and writes the logits at the reference's columns, each position's
//     log-sum-exp and argmax, and the mean cross-entropy over the labelled tokens
//   → {dtype, device, pixels: {grids_equal, max_abs_diff}, logits, lse, argmax, loss} for compare_vl_parity.py.
//   Anneal.Bench vl-parity --reference DIR/vl_parity_reference.json [--dtype float32|bfloat16] [--device cpu|cuda] --json OUT.json
//   Anneal.Bench vl-parity --self-check DIR   writes a reference-shaped example for the built-in tiny
//     Qwen3-VL model (no transformers values) so the plumbing can be run on a CPU.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Anneal.Core.Vision;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Vision;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

static class VlParityBench
{
    public static void Run(Options o, Device device)
    {
        if (o.SelfCheckDir is { } dir)
        {
            WriteSelfCheck(dir);
            return;
        }
        if (o.Reference is null || o.Json is null)
            throw new ArgumentException("vl-parity needs --reference FILE --json OUT (or --self-check DIR)");
        var dtype = o.Dtype switch
        {
            "float32" => ScalarType.Float32,
            "bfloat16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--dtype {o.Dtype}: expected float32 or bfloat16"),
        };
        var folder = Path.GetDirectoryName(Path.GetFullPath(o.Reference))!;
        var reference = JsonNode.Parse(File.ReadAllText(o.Reference))!.AsObject();
        var modelDir = o.ModelDir ?? Path.Combine(folder, reference["model_dir"]!.GetValue<string>());
        var columns = reference["logit_columns"]!.AsArray().Select(c => c!.GetValue<long>()).ToArray();
        var clock = Stopwatch.StartNew();

        var inputs = SafetensorsFile.Open(Path.Combine(folder, reference["inputs"]!.GetValue<string>()));
        using var ids = inputs.Read("input_ids", ScalarType.Int64);                 // (1, T)
        using var labels = inputs.Read("labels", ScalarType.Int64);                 // (1, T)
        using var pixels = inputs.Read("pixel_values", ScalarType.Float32);         // (N, 1536)
        using var gridTensor = inputs.Read("image_grid_thw", ScalarType.Int64);     // (images, 3)
        var gridValues = gridTensor.data<long>().ToArray();
        var grids = Enumerable.Range(0, (int)gridTensor.shape[0])
            .Select(i => new ImageGrid((int)gridValues[3 * i], (int)gridValues[3 * i + 1], (int)gridValues[3 * i + 2])).ToList();

        // Our preprocessing of the same PNGs against the transformers processor's pixels.
        var processor = ImageProcessorConfig.Load(modelDir);
        var ours = reference["images"]!.AsArray().Select(name =>
        {
            var bytes = File.ReadAllBytes(Path.Combine(folder, name!.GetValue<string>()));
            var rgb = ImageDecoder.TryDecode(bytes, out var problem) ?? throw new InvalidDataException($"{name}: {problem}");
            return ImageProcessor.Process(rgb, processor);
        }).ToList();
        var gridsEqual = ours.Select(p => p.Grid).SequenceEqual(grids);
        double? pixelDiff = null;
        if (gridsEqual)
            using (var cat = torch.cat(ours.Select(p => p.Patches).ToArray(), 0))
                pixelDiff = (cat - pixels).abs().max().item<float>();
        foreach (var p in ours) p.Dispose();

        using var model = VisionModelFolder.Load(modelDir, device, dtype);
        model.eval();
        JsonObject result;
        using (no_grad())
        using (NewDisposeScope())
        {
            var idList = ids.data<long>().Select(x => (int)x).ToArray();
            var next = 0;
            var (positions, _) = MRope.Compute(idList, grids, ref next, model.Config.ImageTokenId, processor.MergeSize);
            var T = idList.Length;
            using var features = model.ImageFeatures(pixels.to(device), grids);
            var z = model.call(new VisionLanguageInputs(ids.to(device), torch.tensor(positions).view(3, 1, T).to(device), null, features))[0]
                .to(ScalarType.Float32);                                                          // (T, V)
            var targets = labels[0].slice(0, 1, T, 1).to(device);
            var loss = nn.functional.cross_entropy(z.slice(0, 0, T - 1, 1), targets, ignore_index: -100);
            var picked = z.index_select(1, torch.tensor(columns, dtype: ScalarType.Int64).to(device)).cpu();   // (T, C)
            var lse = z.logsumexp(1).cpu();
            var argmax = z.argmax(1).cpu();
            var c = columns.Length;
            var values = picked.data<float>().ToArray();
            result = new JsonObject
            {
                ["engine"] = "anneal", ["dtype"] = o.Dtype, ["device"] = device.type.ToString().ToLowerInvariant(),
                ["pixels"] = new JsonObject { ["grids_equal"] = gridsEqual, ["max_abs_diff"] = pixelDiff },
                ["logits"] = new JsonArray(Enumerable.Range(0, T).Select(t =>
                    (JsonNode)new JsonArray(Enumerable.Range(0, c).Select(k => (JsonNode)JsonValue.Create((double)values[t * c + k])).ToArray())).ToArray()),
                ["lse"] = new JsonArray(lse.data<float>().Select(v => (JsonNode)JsonValue.Create((double)v)).ToArray()),
                ["argmax"] = new JsonArray(argmax.data<long>().Select(v => (JsonNode)JsonValue.Create(v)).ToArray()),
                ["loss"] = (double)loss.item<float>(),
            };
        }
        result["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
        File.WriteAllText(o.Json, result.ToJsonString());
        Console.WriteLine($"vl-parity {o.Dtype} on {device.type}: wrote {o.Json}; loss {result["loss"]!.GetValue<double>():F5}; " +
                          $"pixels: grids {(gridsEqual ? "equal" : "DIFFER")}, max |Δ| {pixelDiff?.ToString("G3") ?? "-"}");
    }

    /// <summary>
    /// A reference-shaped example for the tiny Qwen3-VL model, built with our own processor (so the
    /// pixel comparison is trivially exact and there are no transformers values): checks that the
    /// files, the loader and this program fit together, nothing about agreement with transformers.
    /// </summary>
    static void WriteSelfCheck(string dir)
    {
        Directory.CreateDirectory(dir);
        var modelDir = Path.Combine(dir, "vl_parity_model");
        TinyVisionModel.EnsureCreated(modelDir);
        var config = VisionModelFolder.LoadConfig(modelDir);
        var processor = ImageProcessorConfig.Load(modelDir);
        var names = new List<string>();
        var processed = new List<ProcessedImage>();
        foreach (var (i, h, w) in new[] { (0, 110, 150), (1, 200, 90) })
        {
            using var bitmap = new SKBitmap(w, h);
            for (var y = 0; y < h; y++)
                for (var x = 0; x < w; x++)
                    bitmap.SetPixel(x, y, new SKColor((byte)(255 * x / w), (byte)(255 * y / h), (byte)((x * 7 + y * 5 + i * 40) % 256)));
            using var image = SKImage.FromBitmap(bitmap);
            using var png = image.Encode(SKEncodedImageFormat.Png, 100);
            var name = $"vl_parity_image{i}.png";
            File.WriteAllBytes(Path.Combine(dir, name), png.ToArray());
            names.Add(name);
            processed.Add(ImageProcessor.Process(ImageDecoder.TryDecode(png.ToArray(), out _)!, processor));
        }
        var random = new Random(1);
        int[] Words(int n) => Enumerable.Range(0, n).Select(_ => random.Next(10, config.ImageTokenId - 10)).ToArray();
        var tokens = processed.Select(p => p.Grid.Tokens(processor.MergeSize)).ToArray();
        var prompt = Words(5).Append(config.VisionStartTokenId).Concat(Enumerable.Repeat(config.ImageTokenId, tokens[0])).Append(config.VisionEndTokenId)
            .Concat(Words(7)).Append(config.VisionStartTokenId).Concat(Enumerable.Repeat(config.ImageTokenId, tokens[1])).Append(config.VisionEndTokenId)
            .Concat(Words(6)).ToArray();
        var answer = Words(20);
        var ids = prompt.Concat(answer).Select(x => (long)x).ToArray();
        var labels = Enumerable.Repeat(-100L, prompt.Length).Concat(answer.Select(x => (long)x)).ToArray();
        var grid = processed.SelectMany(p => new long[] { p.Grid.T, p.Grid.H, p.Grid.W }).ToArray();
        SafetensorsFile.Write(Path.Combine(dir, "vl_parity_inputs.safetensors"),
        [
            ("input_ids", torch.tensor(ids).view(1, -1)), ("labels", torch.tensor(labels).view(1, -1)),
            ("pixel_values", torch.cat(processed.Select(p => p.Patches).ToArray(), 0)), ("image_grid_thw", torch.tensor(grid).view(-1, 3)),
        ]);
        var vocab = config.Text.VocabSize;
        var reference = new JsonObject
        {
            ["engine"] = "self-check (no transformers values)", ["model_dir"] = "vl_parity_model", ["inputs"] = "vl_parity_inputs.safetensors",
            ["images"] = new JsonArray(names.Select(n => (JsonNode)n).ToArray()), ["tokens"] = ids.Length,
            ["image_tokens"] = new JsonArray(tokens.Select(t => (JsonNode)t).ToArray()),
            ["logit_columns"] = new JsonArray(Enumerable.Range(0, vocab).Where(c => c % 7 == 0).Select(c => (JsonNode)c).ToArray()),
        };
        File.WriteAllText(Path.Combine(dir, "vl_parity_reference.json"), reference.ToJsonString());
        Console.WriteLine($"wrote a self-check example in {dir}: {ids.Length} tokens, image tokens [{string.Join(", ", tokens)}]");
    }
}
