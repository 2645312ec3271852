// Dataset validation benchmark.
//   generate --mb N --out PATH       chat JSONL of about N MB, the same bytes for the same N
//   validate PATH [--by-document] [--repeat K]
//                                    times DatasetValidator.Validate (the streaming check) or the
//                                    per-line document validator it replaced; prints one line:
//                                    `<name> <bytes> <examples> <best wall s> <MB/s> <best CPU s>
//                                    <MB per CPU second> <peak RSS MiB>` (CPU: all threads of the process)
// bench/datacheck.sh runs both beside `anneal files check` and bench/datacheck/validate_upstream.py.
using System.Diagnostics;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Anneal.Core.Datasets;

var command = args.FirstOrDefault();
string Option(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

switch (command)
{
    case "generate":
        Generate(long.Parse(Option("--mb", "30")) * 1_000_000, Option("--out", "chat.jsonl"));
        return 0;
    case "validate" when args.Length > 1:
        return Validate(args[1], args.Contains("--by-document"), int.Parse(Option("--repeat", "1")));
    default:
        Console.Error.WriteLine("usage: Anneal.DataBench generate --mb N --out PATH | validate PATH [--by-document] [--repeat K]");
        return 2;
}

static int Validate(string path, bool byDocument, int repeat)
{
    var bytes = new FileInfo(path).Length;
    double best = double.MaxValue, bestCpu = double.MaxValue;
    DatasetReport? report = null;
    var process = Process.GetCurrentProcess();
    for (var i = 0; i < repeat; i++)
    {
        process.Refresh();
        var cpu = process.TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan))
            report = byDocument ? DatasetValidator.ValidateByDocument(stream) : DatasetValidator.Validate(stream);
        best = Math.Min(best, clock.Elapsed.TotalSeconds);
        process.Refresh();
        bestCpu = Math.Min(bestCpu, (process.TotalProcessorTime - cpu).TotalSeconds);
    }
    if (!report!.IsValid)
    {
        Console.Error.WriteLine($"{path}: {report.TotalErrors} errors, first: {report.Errors.FirstOrDefault()}");
        return 1;
    }
    var name = byDocument ? "document-per-line" : "streaming-check";
    Console.WriteLine($"{name} {bytes} {report.NumExamples} {best:F3} {bytes / 1e6 / best:F0} {bestCpu:F3} {bytes / 1e6 / bestCpu:F0} {PeakRssMiB():F0}");
    return 0;
}

// VmHWM: the process's peak resident set, as /usr/bin/time -v reports it.
static double PeakRssMiB()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
    return double.NaN;
}

// Records shaped like agent traces: a system prompt, several user/assistant turns of 20-120
// words, every fifth record a tool call and its answer. About 1.7 KB a record, like the 332 MB /
// 200,000-example file in issue 17. Some text is non-ASCII and some holds newlines and quotes.
static void Generate(long targetBytes, string path)
{
    var random = new Random(17);
    string[] words =
    [
        "the", "agent", "moves", "north", "collects", "wood", "crafts", "a", "table", "then", "looks", "for", "stone",
        "inventory", "shows", "sapling", "health", "is", "low", "so", "it", "eats", "drinks", "water", "and", "rests",
        "near", "the", "tree", "café", "naïve", "über", "日本語", "中文", "😀", "\"quoted\"", "line\nbreak", "tab\tstop",
    ];
    string Words(int min, int max)
    {
        var n = random.Next(min, max);
        var sb = new StringBuilder();
        for (var i = 0; i < n; i++) sb.Append(i == 0 ? "" : " ").Append(words[random.Next(words.Length)]);
        return sb.ToString();
    }
    using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
    var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    long examples = 0;
    while (file.Length < targetBytes)
    {
        using (var w = new Utf8JsonWriter(file, options))
        {
            w.WriteStartObject();
            w.WriteStartArray("messages");
            Message(w, "system", "You are an agent playing Crafter. Reply with one action and a short reason.");
            var turns = random.Next(2, 5);
            for (var t = 0; t < turns; t++)
            {
                Message(w, "user", "Observation: " + Words(20, 70));
                if (examples % 5 == 0 && t == 0)
                {
                    var id = $"call_{examples}";
                    w.WriteStartObject();
                    w.WriteString("role", "assistant");
                    w.WriteNull("content");
                    w.WriteStartArray("tool_calls");
                    w.WriteStartObject();
                    w.WriteString("id", id);
                    w.WriteString("type", "function");
                    w.WriteStartObject("function");
                    w.WriteString("name", "interact");
                    w.WriteString("arguments", $"{{\"action\": \"{words[random.Next(26)]}\", \"times\": {random.Next(1, 9)}}}");
                    w.WriteEndObject();
                    w.WriteEndObject();
                    w.WriteEndArray();
                    w.WriteEndObject();
                    w.WriteStartObject();
                    w.WriteString("role", "tool");
                    w.WriteString("tool_call_id", id);
                    w.WriteString("content", "{\"ok\": true}");
                    w.WriteEndObject();
                }
                Message(w, "assistant", "Action: " + Words(10, 50));
            }
            w.WriteEndArray();
            w.WriteStartObject("metadata");
            w.WriteNumber("episode", examples / 10);
            w.WriteNumber("step", examples % 10);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        file.WriteByte((byte)'\n');
        examples++;
    }
    Console.WriteLine($"{path}: {file.Length} bytes, {examples} examples");

    static void Message(Utf8JsonWriter w, string role, string content)
    {
        w.WriteStartObject();
        w.WriteString("role", role);
        w.WriteString("content", content);
        w.WriteEndObject();
    }
}
