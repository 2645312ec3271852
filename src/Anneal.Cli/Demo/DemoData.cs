// The demo's dataset and config, written into the demo folder so the user can look at them and
// reuse them with `anneal train`. The dataset is a small, regular task (short arithmetic and
// capital-city answers in a fixed format) so that a few dozen steps of a tiny model visibly
// lower the loss.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Anneal.Cli.Demo;

public static class DemoData
{
    public const string Prompt = "What is 3 plus 4?";

    static readonly (string Country, string Capital)[] Capitals =
    [
        ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
        ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago"), ("Canada", "Ottawa"),
        ("Greece", "Athens"), ("Poland", "Warsaw"),
    ];

    /// <summary>JSONL: `count` chat records of the spec's shape (system, user, assistant).</summary>
    public static string Dataset(int count = 48)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < count; i++)
        {
            string question, answer;
            if (i % 2 == 0)
            {
                var (a, b) = (i % 7 + 1, i / 2 % 5 + 1);
                question = $"What is {a} plus {b}?";
                answer = $"{a} plus {b} is {(a + b).ToString(CultureInfo.InvariantCulture)}.";
            }
            else
            {
                var (country, capital) = Capitals[i / 2 % Capitals.Length];
                question = $"What is the capital of {country}?";
                answer = $"The capital of {country} is {capital}.";
            }
            var record = new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "system", ["content"] = "You answer in one short sentence." },
                    new JsonObject { ["role"] = "user", ["content"] = question },
                    new JsonObject { ["role"] = "assistant", ["content"] = answer }),
            };
            sb.Append(record.ToJsonString(new JsonSerializerOptions { WriteIndented = false })).Append('\n');
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
        per_device_batch = 4
        gradient_accumulation_steps = 1
        learning_rate = 3e-3
        warmup_ratio = 0.1
        sequence_length = 128
        seed = 7
        """;
}
