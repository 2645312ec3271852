// The official OpenAI .NET library against the inference server: greedy answers equal
// `anneal generate` (TrainerProcess.GenerateAsync) for the base model, a full fine-tune and a LoRA
// adapter served on the shared base; streaming gives the same text; bad requests get OpenAI errors.
using System.ClientModel;
using System.Text;
using Anneal.Training;
using OpenAI;
using OpenAI.Chat;

namespace Anneal.Inference.Tests;

[Collection(ServingCollection.Name)]
public sealed class OpenAiClientTests(ServingFixture f)
{
    const string Prompt = "What is the capital of France?";

    ChatClient Client(string model, string key = ServingFixture.Key) =>
        new(model, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(f.Server.BaseUrl + "/v1") });

    static ChatCompletionOptions Greedy(int maxTokens = 24) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens };

    static async Task<string> AnnealGenerate(string modelDir, int maxTokens)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await TrainerProcess.GenerateAsync(modelDir, Prompt, maxTokens, stdout, stderr, CancellationToken.None);
        Assert.True(code == 0, stderr.ToString());
        return stdout.ToString()[..^Environment.NewLine.Length];
    }

    [Theory]
    [InlineData(ServingFixture.BaseId, "base")]
    [InlineData(ServingFixture.FftId, "fft")]
    [InlineData(ServingFixture.FtId, "merged")]
    public async Task Greedy_answers_equal_anneal_generate_for_base_full_and_lora_models(string model, string reference)
    {
        var dir = reference switch { "base" => f.BaseDir, "fft" => f.FftDir, _ => f.MergedDir };
        var expected = await AnnealGenerate(dir, 24);
        ChatCompletion answer = await Client(model).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy());
        Assert.Equal(expected, answer.Content[0].Text);
        Assert.Equal(model, answer.Model);
        Assert.True(answer.Usage.InputTokenCount > 5);
        Assert.Equal(answer.FinishReason == ChatFinishReason.Length ? 24 : answer.Usage.OutputTokenCount, answer.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task The_three_models_answer_differently()
    {
        var answers = new List<string>();
        foreach (var model in new[] { ServingFixture.BaseId, ServingFixture.FftId, ServingFixture.FtId, ServingFixture.Ft2Id })
            answers.Add((await Client(model).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy())).Value.Content[0].Text);
        Assert.Equal(answers.Count, answers.Distinct().Count());
    }

    [Theory]
    [InlineData(ServingFixture.BaseId)]
    [InlineData(ServingFixture.FtId)]
    public async Task Streaming_gives_the_same_text_and_usage_as_one_answer(string model)
    {
        var client = Client(model);
        ChatCompletion whole = await client.CompleteChatAsync([new UserChatMessage(Prompt)], Greedy(20));
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        var updates = 0;
        await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage(Prompt)], Greedy(20)))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
        Assert.True(updates > 3, $"only {updates} chunks");
    }

    [Fact]
    public async Task Sampling_with_a_seed_repeats_and_max_tokens_ends_with_length()
    {
        var options = new ChatCompletionOptions { Temperature = 1.0f, TopP = 0.9f, Seed = 7, MaxOutputTokenCount = 12 };
        var client = Client(ServingFixture.BaseId);
        ChatCompletion a = await client.CompleteChatAsync([new UserChatMessage(Prompt)], options);
        ChatCompletion b = await client.CompleteChatAsync([new UserChatMessage(Prompt)], options);
        Assert.Equal(a.Content[0].Text, b.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, a.FinishReason);
        Assert.Equal(12, a.Usage.OutputTokenCount);
        options.Seed = 8;
        var others = new List<string>();
        for (var seed = 8; seed < 12; seed++)
        {
            options.Seed = seed;
            others.Add((await client.CompleteChatAsync([new UserChatMessage(Prompt)], options)).Value.Content[0].Text);
        }
        Assert.Contains(others, o => o != a.Content[0].Text);
    }

    [Fact]
    public async Task A_stop_sequence_cuts_the_answer_before_it()
    {
        var client = Client(ServingFixture.BaseId);
        var full = (await client.CompleteChatAsync([new UserChatMessage(Prompt)], Greedy(24))).Value.Content[0].Text;
        Assert.True(full.Length > 6, full);
        var stop = full.Substring(4, 2);
        var options = Greedy(24);
        options.StopSequences.Add(stop);
        ChatCompletion cut = await client.CompleteChatAsync([new UserChatMessage(Prompt)], options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        Assert.True(cut.Usage.OutputTokenCount < 24);
    }

    [Fact]
    public async Task Unknown_model_is_a_404_model_not_found()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client("ft:anneal/tiny-qwen3:job_nope").CompleteChatAsync([new UserChatMessage(Prompt)], Greedy()));
        Assert.Equal(404, e.Status);
        Assert.Contains("ft:anneal/tiny-qwen3:job_nope", e.Message);
    }

    [Fact]
    public async Task Wrong_key_is_a_401()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client(ServingFixture.BaseId, "wrong").CompleteChatAsync([new UserChatMessage(Prompt)], Greedy()));
        Assert.Equal(401, e.Status);
        Assert.Contains("Invalid API key", e.Message);
    }

    [Fact]
    public async Task Out_of_range_sampling_values_are_400s_naming_the_field()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client(ServingFixture.BaseId).CompleteChatAsync([new UserChatMessage(Prompt)], new ChatCompletionOptions { Temperature = 3 }));
        Assert.Equal(400, e.Status);
        Assert.Contains("temperature 3 is out of range", e.Message);
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(ServingFixture.BaseId).CompleteChatAsync([new UserChatMessage(Prompt)], new ChatCompletionOptions { TopP = 0 }));
        Assert.Equal(400, e.Status);
        Assert.Contains("top_p 0 is out of range", e.Message);
    }

    [Fact]
    public async Task Too_many_tokens_is_a_400_naming_the_context_length()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client(ServingFixture.BaseId).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy(600)));
        Assert.Equal(400, e.Status);
        Assert.Contains("maximum context length is 512 tokens", e.Message);
    }
}
