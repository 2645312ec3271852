// Continuous batching and multi-LoRA: concurrent requests share decode steps and still give each
// the answer it gets alone; adapters load on first use and are evicted by the memory budget.
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Inference.Engine;

namespace Anneal.Inference.Tests;

[Collection(ServingCollection.Name)]
public sealed class BatchingTests(ServingFixture f)
{
    HttpClient Http()
    {
        var http = new HttpClient { BaseAddress = new Uri(f.Server.BaseUrl + "/v1/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ServingFixture.Key);
        return http;
    }

    static JsonObject Chat(string model, string prompt, int maxTokens = 16) => new()
    {
        ["model"] = model,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt }),
        ["temperature"] = 0,
        ["max_tokens"] = maxTokens,
        ["ignore_eos"] = true,
    };

    static async Task<JsonObject> Post(HttpClient http, string path, JsonObject body)
    {
        var response = await http.PostAsJsonAsync(path, body);
        var json = (await response.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.True(response.IsSuccessStatusCode, json.ToJsonString());
        return json;
    }

    static string Content(JsonObject answer, int choice = 0) => answer["choices"]![choice]!["message"]!["content"]!.GetValue<string>();

    [Fact]
    public async Task Concurrent_requests_on_base_and_adapters_share_decode_steps_and_match_their_answers_alone()
    {
        using var http = Http();
        var cases = new[]
        {
            (ServingFixture.BaseId, "Where do fish live?"),
            (ServingFixture.FtId, "Where do fish live?"),
            (ServingFixture.Ft2Id, "What do bees make?"),
            (ServingFixture.BaseId, "Which animal barks? Tell me more about it."),
        };
        var alone = new List<string>();
        foreach (var (model, prompt) in cases) alone.Add(Content(await Post(http, "chat/completions", Chat(model, prompt))));

        var engine = (ServingEngine)f.Server.Catalog.Engine(new ModelTarget("base", f.BaseDir, null));
        var (steps, rows) = (engine.DecodeSteps, engine.DecodeRows);
        var together = await Task.WhenAll(cases.Select(c => Post(http, "chat/completions", Chat(c.Item1, c.Item2))));
        Assert.Equal(alone, together.Select(a => Content(a)).ToList());
        var meanBatch = (double)(engine.DecodeRows - rows) / (engine.DecodeSteps - steps);
        Assert.True(meanBatch > 1.5, $"mean rows per decode step {meanBatch:F2}");
    }

    [Fact]
    public async Task N_choices_with_a_seed_are_repeatable_and_counted_in_usage()
    {
        using var http = Http();
        var body = Chat(ServingFixture.BaseId, "What colour is the sky?", 8);
        body["temperature"] = 1.2;
        body["n"] = 3;
        body["seed"] = 11;
        var a = await Post(http, "chat/completions", body);
        var b = await Post(http, "chat/completions", (JsonObject)body.DeepClone());
        Assert.Equal(3, a["choices"]!.AsArray().Count);
        Assert.Equal(Enumerable.Range(0, 3).Select(i => Content(a, i)), Enumerable.Range(0, 3).Select(i => Content(b, i)));
        Assert.True(Enumerable.Range(0, 3).Select(i => Content(a, i)).Distinct().Count() > 1);
        Assert.Equal(24, a["usage"]!["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task Completions_endpoint_continues_raw_text_and_top_k_1_is_greedy()
    {
        using var http = Http();
        var greedy = await Post(http, "completions", new JsonObject { ["model"] = ServingFixture.BaseId, ["prompt"] = "The sky is", ["max_tokens"] = 8, ["temperature"] = 0 });
        var topK = await Post(http, "completions", new JsonObject { ["model"] = ServingFixture.BaseId, ["prompt"] = "The sky is", ["max_tokens"] = 8, ["temperature"] = 1, ["top_k"] = 1 });
        Assert.Equal("text_completion", greedy["object"]!.GetValue<string>());
        Assert.Equal(greedy["choices"]![0]!["text"]!.GetValue<string>(), topK["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("length", greedy["choices"]![0]!["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task Tools_and_enable_thinking_change_the_rendered_prompt()
    {
        using var http = Http();
        var plain = await Post(http, "chat/completions", Chat(ServingFixture.BaseId, "Weather in Paris?", 2));
        var withTools = Chat(ServingFixture.BaseId, "Weather in Paris?", 2);
        withTools["tools"] = new JsonArray(JsonNode.Parse("""{"type":"function","function":{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}"""));
        var tools = await Post(http, "chat/completions", withTools);
        var noThinking = Chat(ServingFixture.BaseId, "Weather in Paris?", 2);
        noThinking["chat_template_kwargs"] = new JsonObject { ["enable_thinking"] = false };
        var off = await Post(http, "chat/completions", noThinking);
        int Prompt(JsonObject a) => a["usage"]!["prompt_tokens"]!.GetValue<int>();
        Assert.True(Prompt(tools) > Prompt(plain) + 20);
        Assert.True(Prompt(off) > Prompt(plain));
    }

    [Fact]
    public async Task A_bad_message_is_a_400_naming_its_field()
    {
        using var http = Http();
        var body = Chat(ServingFixture.BaseId, "x");
        body["messages"]!.AsArray().Add(new JsonObject { ["role"] = "robot", ["content"] = "hi" });
        var response = await http.PostAsJsonAsync("chat/completions", body);
        var json = (await response.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.Equal(400, (int)response.StatusCode);
        Assert.Equal("invalid_request_error", json["error"]!["type"]!.GetValue<string>());
        Assert.StartsWith("messages[1]", json["error"]!["param"]!.GetValue<string>());
    }

    [Fact]
    public void Adapters_are_loaded_on_first_use_and_the_least_recently_used_idle_one_is_evicted_over_budget()
    {
        var config = Anneal.Training.Checkpoints.ModelFolder.LoadConfig(f.BaseDir);
        var oneAdapter = LoraAdapter.Load(f.AdapterDir, config, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32);
        using var cache = new AdapterCache(config, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32, budgetBytes: oneAdapter.Bytes + 1);
        oneAdapter.Dispose();
        var a = cache.Acquire(f.AdapterDir);
        cache.Release(a);
        var b = cache.Acquire(f.Adapter2Dir);               // over budget: a is idle, so it goes
        Assert.Equal([Path.GetFullPath(f.Adapter2Dir)], cache.Loaded);
        var again = cache.Acquire(f.AdapterDir);            // b is in use: kept, over budget until released
        Assert.Equal(3, cache.Loads);
        Assert.Equal(2, cache.Loaded.Count);
        cache.Release(b);
        cache.Release(again);
    }

    [Fact]
    public void Rows_in_scattered_slots_decode_together_to_the_tokens_each_gets_alone_with_generate()
    {
        // Rows in consecutive slots attend over a view of the cache; others through a copy of
        // their prefixes. Slots 3 and 1, in that order, take the copy; each row alone the view.
        using var model = Anneal.Training.Checkpoints.ModelFolder.Load(f.BaseDir, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32);
        model.eval();
        var c = model.Config;
        var decoder = new BatchedDecoder(model);
        using var cache = new SlotKvCache(c.NumHiddenLayers, 4, 64, c.NumKeyValueHeads, c.HeadDim, TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32);
        long[][] prompts = [[5, 9, 2, 14, 7], [3, 8, 1, 6, 12, 4, 10, 11]];
        int[] slots = [3, 1];
        const int steps = 6;

        List<int>[] Decode(int[] rows)
        {
            var answers = rows.Select(_ => new List<int>()).ToArray();
            using (var logits = decoder.Forward(rows.Select(r => prompts[r]).ToList(), rows.Select(r => new BatchRow(slots[r], 0, null)).ToList(), cache))
                for (var i = 0; i < rows.Length; i++) answers[i].Add((int)logits[i].argmax().item<long>());
            for (var step = 0; step < steps - 1; step++)
            {
                var batch = rows.Select((r, i) => new BatchRow(slots[r], prompts[r].Length + step, null)).ToList();
                using var logits = decoder.Forward(answers.Select(a => new[] { (long)a[^1] }).ToList(), batch, cache);
                for (var i = 0; i < rows.Length; i++) answers[i].Add((int)logits[i].argmax().item<long>());
            }
            return answers;
        }

        var together = Decode([0, 1]);
        for (var r = 0; r < prompts.Length; r++)
        {
            var alone = Decode([r])[0];
            var reference = Anneal.Training.Generation.Greedy(model, prompts[r].Select(t => (int)t).ToArray(), steps, new HashSet<int>());
            Assert.Equal(reference, alone);
            Assert.Equal(reference, together[r]);
        }
    }
}
