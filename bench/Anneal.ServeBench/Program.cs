// Serving benchmark: the inference server (in this process, on a loopback port) with a Qwen3 of
// the chosen shape (random weights, the tiny tokenizer), N concurrent streaming clients on
// /v1/completions with fixed prompts, each generating exactly --tokens tokens (ignore_eos).
// Three runs side by side in one process: one stream alone; N streams with continuous batching
// (--max-batch N); N streams one request at a time (--max-batch 1, the others queue).
// Reports time to first token (TTFT), tokens/s per stream and in total. `--profile` instead times
// one decode step at 1 and N rows and its pieces, without the server (DecodeProfile.cs).
//
//   dotnet run --project bench/Anneal.ServeBench -c Release -- [--shape 100m|tiny] [--streams 8] [--tokens 32] [--threads 2] [--device cpu|cuda] [--prompt-words 24]
//   dotnet run --project bench/Anneal.ServeBench -c Release -- --profile [--cpu-time] [--prompt-tokens 128] [--reps 15] [--threads 1]
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Inference;
using Anneal.Inference.Engine;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using TorchSharp;

var opts = Args.Parse(args);
NativeLibraries.EnsureTorchLoaded();
if (opts.Threads > 0) torch.set_num_threads(opts.Threads);
var dir = Path.Combine(Path.GetTempPath(), $"anneal-servebench-{opts.Shape}");
var parameters = BenchModel.EnsureCreated(dir, opts.Shape);
if (opts.Profile)
{
    DecodeProfile.Run(dir, opts.Streams, opts.PromptTokens, opts.Reps, args.Contains("--cpu-time"));
    return;
}
Console.WriteLine($"model: {opts.Shape} ({parameters / 1e6:F1}M parameters), device {opts.Device}, torch threads {torch.get_num_threads()}, " +
                  $"{opts.Streams} streams × {opts.Tokens} tokens, prompt ~{opts.PromptWords} words; machine load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

var single = await Run(1, 1, "1 stream alone");
var batched = await Run(opts.Streams, opts.Streams, $"{opts.Streams} streams, continuous batching");
var serial = await Run(1, opts.Streams, $"{opts.Streams} streams, one at a time");
Console.WriteLine();
Console.WriteLine($"| run | TTFT p50 (ms) | TTFT max (ms) | tokens/s per stream | total tokens/s | wall (s) | mean batch |");
Console.WriteLine($"|---|---|---|---|---|---|---|");
foreach (var r in new[] { single, batched, serial }) Console.WriteLine(r.Row());
Console.WriteLine();
Console.WriteLine($"batched total / one stream total: {batched.TotalTps / single.TotalTps:F2}×; batched / one-at-a-time: {batched.TotalTps / serial.TotalTps:F2}×");

async Task<Result> Run(int maxBatch, int streams, string name)
{
    await using var server = await InferenceHost.StartAsync(new InferenceOptions
    {
        Urls = "http://127.0.0.1:0",
        Models = ModelCatalog.FromSpecs([$"bench={dir}"]),
        Engine = new EngineOptions { MaxBatch = maxBatch, MaxModelLength = 512, Device = opts.Device },
    });
    using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl + "/v1/"), Timeout = TimeSpan.FromMinutes(10) };
    await Stream(http, 0, 2);   // warm-up: loads the model, first kernels
    var engine = server.Catalog.LoadedEngines.OfType<ServingEngine>().Single();
    var (steps0, rows0) = (engine.DecodeSteps, engine.DecodeRows);
    var wall = Stopwatch.StartNew();
    var results = await Task.WhenAll(Enumerable.Range(0, streams).Select(i => Stream(http, i, opts.Tokens)));
    wall.Stop();
    var meanBatch = (double)(engine.DecodeRows - rows0) / Math.Max(1, engine.DecodeSteps - steps0);
    return new Result(name, results, wall.Elapsed.TotalSeconds, meanBatch);
}

async Task<(double TtftMs, double Seconds, int Tokens)> Stream(HttpClient http, int index, int tokens)
{
    var prompt = string.Join(' ', Enumerable.Range(0, opts.PromptWords).Select(w => Words[(index * 7 + w) % Words.Length]));
    var body = new JsonObject
    {
        ["model"] = "bench", ["prompt"] = prompt, ["max_tokens"] = tokens, ["temperature"] = 0, ["ignore_eos"] = true,
        ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true },
    };
    var watch = Stopwatch.StartNew();
    using var request = new HttpRequestMessage(HttpMethod.Post, "completions") { Content = JsonContent.Create(body) };
    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
    response.EnsureSuccessStatusCode();
    using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
    double ttft = -1;
    var count = 0;
    while (await reader.ReadLineAsync() is { } line)
    {
        if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
        if (ttft < 0) ttft = watch.Elapsed.TotalMilliseconds;
        if (JsonNode.Parse(line[6..])?["usage"]?["completion_tokens"] is { } used) count = used.GetValue<int>();
    }
    return (ttft, watch.Elapsed.TotalSeconds, count);
}

static partial class Program
{
    public static readonly string[] Words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "jars"];
}

sealed record Result(string Name, (double TtftMs, double Seconds, int Tokens)[] Streams, double Wall, double MeanBatch)
{
    public double TotalTps => Streams.Sum(s => s.Tokens) / Wall;
    public string Row()
    {
        var ttft = Streams.Select(s => s.TtftMs).Order().ToArray();
        var perStream = Streams.Average(s => s.Tokens / s.Seconds);
        return string.Create(CultureInfo.InvariantCulture,
            $"| {Name} | {ttft[ttft.Length / 2]:F0} | {ttft[^1]:F0} | {perStream:F1} | {TotalTps:F1} | {Wall:F1} | {MeanBatch:F2} |");
    }
}

sealed record Args(string Shape, int Streams, int Tokens, int Threads, string Device, int PromptWords, bool Profile, int PromptTokens, int Reps)
{
    public static Args Parse(string[] a)
    {
        string Get(string name, string fallback) => Array.IndexOf(a, name) is var i and >= 0 && i + 1 < a.Length ? a[i + 1] : fallback;
        return new Args(Get("--shape", "100m"), int.Parse(Get("--streams", "8"), CultureInfo.InvariantCulture), int.Parse(Get("--tokens", "32"), CultureInfo.InvariantCulture),
            int.Parse(Get("--threads", "0"), CultureInfo.InvariantCulture), Get("--device", "cpu"), int.Parse(Get("--prompt-words", "24"), CultureInfo.InvariantCulture),
            a.Contains("--profile"), int.Parse(Get("--prompt-tokens", "128"), CultureInfo.InvariantCulture), int.Parse(Get("--reps", "15"), CultureInfo.InvariantCulture));
    }
}

/// <summary>A Qwen3 of a benchmark shape with random weights (torch seed 0) and the tiny tokenizer.</summary>
static class BenchModel
{
    public static long EnsureCreated(string dir, string shape)
    {
        TinyModel.EnsureCreated(dir + "-tokenizer");
        var (hidden, inter, layers, heads, kv, hd) = shape switch
        {
            "100m" => (768, 3072, 12, 12, 4, 64),     // ≈ 104M parameters in the decoder layers
            "tiny" => (128, 384, 4, 4, 2, 32),
            _ => throw new ArgumentException($"--shape {shape}: expected 100m or tiny"),
        };
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir + "-tokenizer", ModelFolder.ConfigFile)))!.AsObject();
        config["hidden_size"] = hidden; config["intermediate_size"] = inter; config["num_hidden_layers"] = layers;
        config["num_attention_heads"] = heads; config["num_key_value_heads"] = kv; config["head_dim"] = hd;
        var cfg = Qwen3Config.Load(WriteTemp(config));
        if (!File.Exists(Path.Combine(dir, ModelFolder.WeightsFile)))
        {
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(dir + "-tokenizer")) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
            File.WriteAllText(Path.Combine(dir, ModelFolder.ConfigFile), config.ToJsonString());
            torch.manual_seed(0);
            using var model = new Qwen3ForCausalLM(cfg, torch.CPU, torch.ScalarType.Float32);
            SafetensorsFile.Write(Path.Combine(dir, ModelFolder.WeightsFile), model.named_parameters().Select(p => (p.name, (torch.Tensor)p.parameter)));
        }
        using var meta = new Qwen3ForCausalLM(cfg, torch.META, torch.ScalarType.Float32);
        return meta.parameters().Sum(p => p.numel());
    }

    static string WriteTemp(JsonObject config)
    {
        var path = Path.GetTempFileName();
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }
}
