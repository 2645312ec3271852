// A small byte-level BPE tokenizer for the built-in tiny model (anneal/tiny-qwen3): the same pipeline and
// special tokens as Qwen3, with a vocabulary learned deterministically from the short English corpus below.
// Layout of ids: 0..255 the single bytes (id = byte value), then one id per learned merge, then Qwen's
// added tokens in Qwen's order (<|endoftext|>, <|im_start|>, <|im_end|>, …, <think>, </think>).
// Training: pre-tokenize the corpus with Qwen's splitter, then repeatedly merge the most frequent adjacent
// pair (ties: ordinal order of the two token strings) until MergeCount merges or no pair occurs twice.
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Training.Tokenization;

public static class TinyTokenizer
{
    public const int MergeCount = 400;

    /// <summary>Qwen3's added tokens, in id order; the first 14 are special (skipped when decoding for display).</summary>
    public static readonly string[] QwenAddedTokens =
    [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
        "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
        "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
        "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
        "<think>", "</think>",
    ];
    const int SpecialCount = 14;

    const string Corpus = """
        The quick brown fox jumps over the lazy dog. A small model learns to answer short questions.
        You are a helpful assistant. Answer the question in one short sentence.
        What is the capital of France? The capital of France is Paris.
        What is the capital of Italy? The capital of Italy is Rome.
        What is the capital of Spain? The capital of Spain is Madrid.
        What is two plus two? Two plus two is four. What is three plus four? Three plus four is seven.
        How many days are in a week? There are seven days in a week.
        How many hours are in a day? There are twenty four hours in a day.
        Which color is the sky on a clear day? The sky is blue on a clear day.
        Which animal says moo? The cow says moo. Which animal says woof? The dog says woof.
        Please translate hello into French. Hello in French is bonjour.
        Please write a short greeting for a friend. Hello my friend, I hope you are well today.
        Tell me about the weather. The weather today is sunny and warm with a light wind from the west.
        It will rain tomorrow in the morning and the evening will be cold.
        The user asks a question and the assistant gives an answer. The answer should be correct and short.
        Let me think about this step by step. First we read the question, then we find the answer.
        I think the answer is yes. I think the answer is no. The result is the number ten.
        Count from one to ten: one, two, three, four, five, six, seven, eight, nine, ten.
        Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 42 100 2024.
        The function get_weather takes a city name and returns the temperature in degrees.
        Call the tool with the arguments as a JSON object: {"name": "get_weather", "arguments": {"city": "Paris"}}
        The tool returned {"temperature": 21, "unit": "celsius"} and the assistant reported it to the user.
        def add(a, b):
            return a + b
        for item in items:
            print(item)
        Training a language model means showing it many examples and adjusting its weights a little each step.
        The loss goes down as the model learns, and the learning rate controls the size of each step.
        A good dataset has clear questions and correct answers, written in the same style every time.
        Thank you for your help! You are welcome. Have a nice day and see you soon.
        This is a test of the tokenizer. It should split words, numbers and punctuation the same way every time.
        Question: Which planet is the largest in our solar system? Answer: Jupiter is the largest planet.
        Question: Who wrote the play about a prince of Denmark? Answer: William Shakespeare wrote Hamlet.
        Question: What do plants need to grow? Answer: Plants need water, light, air and good soil.
        Question: How many legs does a spider have? Answer: A spider has eight legs.
        Question: What is the boiling point of water? Answer: Water boils at one hundred degrees Celsius.
        The students opened their books and started reading the first chapter about the history of science.
        Every morning she walks to the station, buys a newspaper and takes the train to the city center.
        The children played in the garden until the sun went down and their parents called them for dinner.
        Summarize the following text in two sentences. The text describes a journey across the mountains.
        Sorry, I do not know the answer to that question. Could you give me more details, please?
        Here is a list of things to remember: buy milk, call the doctor, finish the report, water the plants.
        The company released a new version of its software with better performance and fewer errors.
        When the data is ready, the trainer reads each example, computes the loss and updates the parameters.
        A checkpoint saves the model, the optimizer state and the position in the data so training can resume.
        The validation loss tells us how well the model works on examples it has not seen during training.
        The server stores files, starts jobs, records events and reports the progress of every training run.
        Good morning! Good afternoon! Good evening! Good night! How are you? I am fine, thank you.
        Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.
        January, February, March, April, May, June, July, August, September, October, November, December.
        Red, orange, yellow, green, blue and purple are the colors of the rainbow.
        """;

    /// <summary>Writes tokenizer.json and tokenizer_config.json into <paramref name="folder"/>; returns the vocabulary size.</summary>
    public static int WriteFiles(string folder)
    {
        Directory.CreateDirectory(folder);
        var (vocab, merges) = Learn(Corpus.Replace("\r\n", "\n"), MergeCount);
        int vocabSize = vocab.Count + QwenAddedTokens.Length;

        var vocabJson = new JsonObject();
        foreach (var (token, id) in vocab.OrderBy(p => p.Value)) vocabJson[token] = id;
        var mergesJson = new JsonArray();
        foreach (var (l, r) in merges) mergesJson.Add(new JsonArray(l, r));
        var addedJson = new JsonArray();
        var decoderJson = new JsonObject();
        for (int i = 0; i < QwenAddedTokens.Length; i++)
        {
            int id = vocab.Count + i;
            bool special = i < SpecialCount;
            addedJson.Add(new JsonObject
            {
                ["id"] = id, ["content"] = QwenAddedTokens[i], ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = special,
            });
            decoderJson[id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = QwenAddedTokens[i], ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false,
                ["single_word"] = false, ["special"] = special,
            };
        }

        JsonObject ByteLevelStep() => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false };
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = addedJson,
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Qwen3PreTokenizer.Pattern },
                        ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    ByteLevelStep()),
            },
            ["post_processor"] = ByteLevelStep(),
            ["decoder"] = ByteLevelStep(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "", ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocabJson, ["merges"] = mergesJson,
            },
        };
        var config = new JsonObject
        {
            ["add_bos_token"] = false,
            ["add_prefix_space"] = false,
            ["added_tokens_decoder"] = decoderJson,
            ["additional_special_tokens"] = new JsonArray(QwenAddedTokens.Skip(1).Take(SpecialCount - 1).Select(t => (JsonNode)t!).ToArray()),
            ["bos_token"] = null,
            ["clean_up_tokenization_spaces"] = false,
            ["eos_token"] = "<|im_end|>",
            ["errors"] = "replace",
            ["model_max_length"] = 4096,
            ["pad_token"] = "<|endoftext|>",
            ["split_special_tokens"] = false,
            ["tokenizer_class"] = "Qwen2Tokenizer",
            ["unk_token"] = null,
        };

        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizer.ToJsonString(options) + "\n", new UTF8Encoding(false));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString(options) + "\n", new UTF8Encoding(false));
        return vocabSize;
    }

    /// <summary>Byte-level BPE training: the byte tokens plus up to <paramref name="mergeCount"/> merges.</summary>
    public static (Dictionary<string, int> Vocab, List<(string Left, string Right)> Merges) Learn(string corpus, int mergeCount)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ByteToChar[b].ToString()] = b;

        // Distinct pieces with their counts, each as a list of symbols; sorted so the result never depends on hashing.
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var piece in Qwen3PreTokenizer.Split(Nfc.Normalize(corpus)))
        {
            var encoded = ByteLevel.Encode(Encoding.UTF8.GetBytes(piece));
            counts[encoded] = counts.GetValueOrDefault(encoded) + 1;
        }
        var words = counts.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => (Symbols: p.Key.Select(c => c.ToString()).ToList(), Count: p.Value)).ToList();

        var merges = new List<(string, string)>();
        while (merges.Count < mergeCount)
        {
            var pairCounts = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var pair = (symbols[i], symbols[i + 1]);
                    pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + count;
                }
            if (pairCounts.Count == 0) break;
            var best = pairCounts
                .OrderByDescending(p => p.Value)
                .ThenBy(p => p.Key.Item1, StringComparer.Ordinal)
                .ThenBy(p => p.Key.Item2, StringComparer.Ordinal)
                .First();
            if (best.Value < 2) break;
            var (left, right) = best.Key;
            string mergedToken = left + right;
            if (!vocab.ContainsKey(mergedToken)) vocab[mergedToken] = vocab.Count;
            merges.Add((left, right));
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == left && symbols[i + 1] == right)
                    {
                        symbols[i] = mergedToken;
                        symbols.RemoveAt(i + 1);
                    }
        }
        return (vocab, merges);
    }
}
