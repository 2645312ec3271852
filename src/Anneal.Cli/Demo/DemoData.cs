// The demo's dataset and config, written into the demo folder so the user can look at them and
// reuse them with `anneal train`. Eight short question/answer facts, trained as one batch for a
// few dozen steps with a constant high learning rate: enough for the tiny model (random weights)
// to learn them, so the sample answer after training shows that the run really changed the model.
using System.Text;
using System.Text.Json.Nodes;

namespace Anneal.Cli.Demo;

public static class DemoData
{
    public static readonly (string Question, string Answer)[] Facts =
    [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("What colour is the sky?", "The sky is blue."),
        ("How many legs does a cat have?", "A cat has four legs."),
        ("What do bees make?", "Bees make honey."),
        ("What is two plus two?", "Two plus two is four."),
        ("Which animal barks?", "A dog barks."),
        ("What melts ice?", "Heat melts ice."),
        ("Where do fish live?", "Fish live in water."),
    ];

    public static string Prompt => Facts[0].Question;

    /// <summary>JSONL: one chat record (user, assistant) per fact.</summary>
    public static string Dataset()
    {
        var sb = new StringBuilder();
        foreach (var (question, answer) in Facts)
        {
            var record = new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = question },
                    new JsonObject { ["role"] = "assistant", ["content"] = answer }),
            };
            sb.Append(record.ToJsonString()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The spec's TOML layout, sized for the tiny model on a couple of CPU cores.</summary>
    public static string Config(string model, string dataFile, int steps) => $"""
        # Demo config: the same sections as the spec's example, sized for a tiny model on CPU.
        [job]
        model = "{model}"
        data = "{dataFile}"
        poll_seconds = 900

        [training]
        mode = "full_finetune"
        use_qlora = false

        [hyperparameters]
        total_steps = {steps}
        per_device_batch = {Facts.Length}
        gradient_accumulation_steps = 1
        learning_rate = 3e-3
        lr_scheduler = "constant"
        warmup_ratio = 0.1
        weight_decay = 0.0
        sequence_length = 64
        seed = 7
        """;
}
