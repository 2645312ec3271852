// Tool calls through the real /v1 pipeline (HTTP, request checks, chat template with tools,
// AnswerText hold-back, response building), driven by an engine whose answer is fixed: a model
// that writes a `<tool_call>` block answers with message.tool_calls and finish_reason "tool_calls",
// whole and streamed, as the official OpenAI library reads them; without `tools` the same text is
// plain content.
using System.ClientModel;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Anneal.Inference.Engine;
using Anneal.Training.Tokenization;
using OpenAI;
using OpenAI.Chat;

namespace Anneal.Inference.Tests;

public sealed class ToolCallServingTests : IAsyncLifetime
{
    const string Model = "scripted";
    const string Answer = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";

    readonly string _dir = Path.Combine(Path.GetTempPath(), "anneal-tool-call-tests", Guid.NewGuid().ToString("n"));
    RunningInference _server = null!;
    ScriptedEngine? _engine;

    /// <summary>Answers every request with the tokens of <see cref="Answer"/>, then "stop"; records the prompts.</summary>
    sealed class ScriptedEngine(string dir) : IGenerationEngine
    {
        public List<string> Prompts { get; } = [];
        public string ModelDir => dir;
        public Qwen3Tokenizer Tokenizer { get; } = Qwen3Tokenizer.Load(dir);
        public int MaxModelLength => 4096;
        public int MaxBatch => 4;
        public string DeviceName => "cpu";
        public bool AcceptsImages => false;

        public ChannelReader<TokenEvent> Submit(GenerationRequest request, CancellationToken ct = default)
        {
            lock (Prompts) Prompts.Add(Tokenizer.Decode(request.PromptIds));
            var channel = Channel.CreateUnbounded<TokenEvent>();
            foreach (var id in Tokenizer.Encode(Answer)) channel.Writer.TryWrite(new TokenEvent(id));
            channel.Writer.TryWrite(new TokenEvent(-1, FinishReasons.Stop));
            channel.Writer.Complete();
            return channel.Reader;
        }

        public void Dispose() { }
    }

    public async Task InitializeAsync()
    {
        TinyTokenizer.WriteFiles(_dir);
        _server = await InferenceHost.StartAsync(new InferenceOptions
        {
            Urls = "http://127.0.0.1:0",
            ApiKey = ServingFixture.Key,
            Models = [new ModelTarget(Model, _dir, null)],
            OpenEngine = (folder, _) => _engine = new ScriptedEngine(folder),
        });
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    ChatClient Client() => new(Model, new ApiKeyCredential(ServingFixture.Key), new OpenAIClientOptions { Endpoint = new Uri(_server.BaseUrl + "/v1") });

    static ChatCompletionOptions WithWeatherTool()
    {
        var options = new ChatCompletionOptions { Temperature = 0 };
        options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "Current weather of a city",
            BinaryData.FromString("""{"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}""")));
        return options;
    }

    static void AssertWeatherArguments(string arguments)
    {
        var args = JsonNode.Parse(arguments)!.AsObject();
        Assert.Equal("Paris", args["city"]!.GetValue<string>());
        Assert.Equal("celsius", args["unit"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_tool_call_block_in_the_answer_comes_back_as_tool_calls()
    {
        ChatCompletion answer = await Client().CompleteChatAsync([new UserChatMessage("Weather in Paris?")], WithWeatherTool());
        Assert.Equal(ChatFinishReason.ToolCalls, answer.FinishReason);
        Assert.Equal("Let me check.", Assert.Single(answer.Content).Text);
        var call = Assert.Single(answer.ToolCalls);
        Assert.Equal(ChatToolCallKind.Function, call.Kind);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.StartsWith("call_", call.Id);
        AssertWeatherArguments(call.FunctionArguments.ToString());
        // The tool reached the model: the chat template rendered it into the prompt.
        Assert.Contains("\"get_weather\"", Assert.Single(_engine!.Prompts));

        // The raw body has OpenAI's shape: one choice, message.tool_calls, finish_reason "tool_calls".
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ServingFixture.Key);
        var body = new JsonObject
        {
            ["model"] = Model,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Weather in Paris?" }),
            ["tools"] = new JsonArray(new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_weather", ["parameters"] = new JsonObject { ["type"] = "object" } } }),
        };
        var response = await http.PostAsync(_server.BaseUrl + "/v1/chat/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        var choice = Assert.Single(json["choices"]!.AsArray())!;
        Assert.Equal("tool_calls", choice["finish_reason"]!.GetValue<string>());
        var raw = Assert.Single(choice["message"]!["tool_calls"]!.AsArray())!;
        Assert.Equal("function", raw["type"]!.GetValue<string>());
        Assert.Equal("get_weather", raw["function"]!["name"]!.GetValue<string>());
        Assert.IsType<string>(raw["function"]!["arguments"]!.GetValue<string>());
    }

    [Fact]
    public async Task Streamed_the_content_comes_first_and_the_tool_call_in_the_last_delta()
    {
        var content = new StringBuilder();
        var calls = new List<StreamingChatToolCallUpdate>();
        ChatFinishReason? finish = null;
        await foreach (var update in Client().CompleteChatStreamingAsync([new UserChatMessage("Weather in Paris?")], WithWeatherTool()))
        {
            foreach (var part in update.ContentUpdate) content.Append(part.Text);
            calls.AddRange(update.ToolCallUpdates);
            finish ??= update.FinishReason;
        }
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        // The `<tool_call>` block is never streamed as content.
        Assert.Equal("Let me check.", content.ToString().Trim());
        var call = Assert.Single(calls);
        Assert.Equal(0, call.Index);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.StartsWith("call_", call.ToolCallId);
        AssertWeatherArguments(call.FunctionArgumentsUpdate.ToString());
    }

    [Fact]
    public async Task Without_tools_the_same_answer_is_plain_content()
    {
        ChatCompletion answer = await Client().CompleteChatAsync([new UserChatMessage("Weather in Paris?")], new ChatCompletionOptions { Temperature = 0 });
        Assert.Equal(ChatFinishReason.Stop, answer.FinishReason);
        Assert.Empty(answer.ToolCalls);
        Assert.Equal(Answer, answer.Content[0].Text);
    }
}
