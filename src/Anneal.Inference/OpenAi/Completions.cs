// POST /v1/chat/completions and POST /v1/completions: a request is checked (RequestFields), its
// prompt rendered (Qwen3 chat template with tools and enable_thinking; image_url parts for Qwen3-VL
// models, decoded by ImageInputs and expanded to their image tokens) and tokenized, then each
// of its n choices is submitted to the model's ServingEngine, which batches it with whatever else
// is running. Answers come back whole (with usage) or as server-sent events: one
// `chat.completion.chunk` per piece of final text, a last chunk with finish_reason, a usage chunk
// when stream_options.include_usage, then `data: [DONE]`, as OpenAI streams them.
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Inference.Engine;
using Anneal.Training;
using Anneal.Training.Tokenization;
using Microsoft.AspNetCore.Http;

namespace Anneal.Inference.OpenAi;

public static class Completions
{
    /// <summary>What one request asks the engine for, once checked.</summary>
    sealed record Job(IGenerationEngine Engine, ModelTarget Target, CommonSettings Settings, List<int[]> Prompts, int MaxTokens, bool Tools,
        IReadOnlyList<Anneal.Training.Vision.ProcessedImage>? Images = null);

    sealed record ChoiceResult(int Index, string Text, string FinishReason, int Tokens);

    public static async Task Chat(HttpContext http, Func<HttpContext, string, ModelTarget> resolve, ModelCatalog catalog)
    {
        var body = await RequestFields.ReadBodyAsync(http.Request);
        var settings = RequestFields.Common(body);
        if (body["messages"] is not JsonArray { Count: > 0 } messages)
            throw OpenAiError.BadRequest("messages must be a non-empty list of {role, content} objects", "messages");
        var tools = body["tools"] switch
        {
            null => null,
            JsonArray { Count: 0 } => null,
            JsonArray a => a,
            var other when other.GetValueKind() == JsonValueKind.Null => null,
            _ => throw OpenAiError.BadRequest("tools must be a list of {type: \"function\", function: {...}} objects", "tools"),
        };
        if (RequestFields.String(body, "tool_choice") == "none") tools = null;
        var thinking = RequestFields.Bool(body, "enable_thinking");
        if (body["chat_template_kwargs"] is JsonObject kwargs)
            thinking = RequestFields.Bool(kwargs, "enable_thinking", "chat_template_kwargs.enable_thinking") ?? thinking;

        var images = ImageInputs.Read(messages);
        var target = resolve(http, settings.Model);
        var engine = OpenEngine(catalog, target);
        if (images.Count > 0 && !engine.AcceptsImages)
            throw OpenAiError.BadRequest($"model {settings.Model} takes no images: image_url parts need a Qwen3-VL model", images[0].Field);
        var record = new JsonObject { ["messages"] = messages.DeepClone() };
        if (tools is not null) record["tools"] = tools.DeepClone();
        string text;
        try { text = Qwen3ChatTemplate.Render(record, addGenerationPrompt: true, enableThinking: thinking); }
        catch (ChatRecordException e) { throw OpenAiError.BadRequest(e.Message, e.Field); }
        var prompt = engine.Tokenizer.Encode(text);
        List<Anneal.Training.Vision.ProcessedImage>? processed = null;
        if (engine is VisionEngine vision)
        {
            try { (prompt, processed) = vision.Expand(prompt, images.Select(i => i.Image).ToList()); }
            catch (ArgumentException e) { throw OpenAiError.BadRequest(e.Message, "messages"); }
        }
        try { await Run(http, new Job(engine, target, settings, [prompt], MaxTokens(settings, prompt.Length, engine), tools is not null, processed), chat: true); }
        finally
        {
            foreach (var p in processed ?? []) p.Dispose();
        }
    }

    public static async Task Text(HttpContext http, Func<HttpContext, string, ModelTarget> resolve, ModelCatalog catalog)
    {
        var body = await RequestFields.ReadBodyAsync(http.Request);
        var settings = RequestFields.Common(body);
        var prompts = body["prompt"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
            JsonArray { Count: > 0 } a when a.All(x => x is JsonValue s && s.GetValueKind() == JsonValueKind.String) => a.Select(x => x!.GetValue<string>()).ToList(),
            _ => throw OpenAiError.BadRequest("prompt must be a string or a non-empty list of strings", "prompt"),
        };
        if (RequestFields.Bool(body, "echo") == true) throw OpenAiError.BadRequest("echo is not supported", "echo");
        if (RequestFields.String(body, "suffix") is not null) throw OpenAiError.BadRequest("suffix is not supported", "suffix");
        if (RequestFields.Integer(body, "best_of") is { } bestOf && bestOf != settings.N) throw OpenAiError.BadRequest("best_of is not supported", "best_of");
        var target = resolve(http, settings.Model);
        var engine = OpenEngine(catalog, target);
        var ids = prompts.Select(p => engine.Tokenizer.Encode(p)).ToList();
        if (ids.FirstOrDefault(i => i.Length == 0) is not null) throw OpenAiError.BadRequest("prompt must not be empty", "prompt");
        var maxTokens = ids.Select(i => MaxTokens(settings, i.Length, engine)).Min();
        await Run(http, new Job(engine, target, settings, ids, maxTokens, false), chat: false);
    }

    static IGenerationEngine OpenEngine(ModelCatalog catalog, ModelTarget target)
    {
        try { return catalog.Engine(target); }
        catch (TrainerUserException e) { throw OpenAiError.Server($"model {target.Id} could not be loaded: {e.Message}"); }
    }

    /// <summary>max_tokens, or what is left of the context; a prompt that leaves no room is a 400 naming the numbers.</summary>
    static int MaxTokens(CommonSettings s, int promptTokens, IGenerationEngine engine)
    {
        var limit = engine.MaxModelLength;
        var wanted = s.MaxTokens ?? Math.Max(1, limit - promptTokens);
        if (promptTokens + wanted > limit)
            throw OpenAiError.BadRequest(
                $"This model's maximum context length is {limit} tokens. However, you requested {promptTokens + wanted} tokens " +
                $"({promptTokens} in the messages, {wanted} in the completion). Please reduce the length of the messages or completion.",
                s.MaxTokens is null ? "messages" : "max_tokens", "context_length_exceeded");
        return wanted;
    }

    static async Task Run(HttpContext http, Job job, bool chat)
    {
        var id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var s = job.Settings;
        using var aborted = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        var stream = s.Stream ? new SseWriter(http.Response) : null;
        var objectName = chat ? "chat.completion.chunk" : "text_completion";

        JsonObject Chunk(JsonObject choice) => new()
        {
            ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = s.Model,
            ["choices"] = new JsonArray(choice),
        };

        var tasks = new List<Task<ChoiceResult>>();
        for (var p = 0; p < job.Prompts.Count; p++)
            for (var c = 0; c < s.N; c++)
            {
                var index = p * s.N + c;
                var request = new GenerationRequest(job.Prompts[p], job.MaxTokens, s.Sampling, c, job.Target.AdapterDir, s.IgnoreEos, job.Images);
                tasks.Add(RunChoice(job, request, index, aborted.Token, stream is null ? null : async (delta, first) =>
                {
                    JsonObject choice = chat
                        ? new() { ["index"] = index, ["delta"] = first ? new JsonObject { ["role"] = "assistant", ["content"] = delta } : new JsonObject { ["content"] = delta }, ["logprobs"] = null, ["finish_reason"] = null }
                        : new() { ["index"] = index, ["text"] = delta, ["logprobs"] = null, ["finish_reason"] = null };
                    await stream.Send(Chunk(choice));
                }));
            }

        ChoiceResult[] results;
        try { results = await Task.WhenAll(tasks); }
        catch (Exception e) when (stream is not null && e is not OperationCanceledException)
        {
            aborted.Cancel();
            var error = e as OpenAiError ?? OpenAiError.Server(e.Message);
            await stream.Send(error.ToJson());
            await stream.Done();
            return;
        }
        finally { aborted.Cancel(); }

        var promptTokens = job.Prompts.Sum(p => p.Length);
        var completionTokens = results.Sum(r => r.Tokens);
        var usage = new JsonObject { ["prompt_tokens"] = promptTokens, ["completion_tokens"] = completionTokens, ["total_tokens"] = promptTokens + completionTokens };

        if (stream is not null)
        {
            foreach (var r in results.OrderBy(r => r.Index))
            {
                if (chat)
                {
                    var delta = new JsonObject();
                    var finish = r.FinishReason;
                    if (job.Tools && ToolCalls.Parse(r.Text) is { Calls.Count: > 0 } parsed)
                    {
                        var calls = new JsonArray();
                        for (var i = 0; i < parsed.Calls.Count; i++)
                        {
                            var call = parsed.Calls[i]!.DeepClone().AsObject();
                            call["index"] = i;
                            calls.Add(call);
                        }
                        delta["tool_calls"] = calls;
                        finish = "tool_calls";
                    }
                    await stream.Send(Chunk(new JsonObject { ["index"] = r.Index, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finish }));
                }
                else
                    await stream.Send(Chunk(new JsonObject { ["index"] = r.Index, ["text"] = "", ["logprobs"] = null, ["finish_reason"] = r.FinishReason }));
            }
            if (s.IncludeUsage)
                await stream.Send(new JsonObject { ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = s.Model, ["choices"] = new JsonArray(), ["usage"] = usage });
            await stream.Done();
            return;
        }

        var choices = new JsonArray();
        foreach (var r in results.OrderBy(r => r.Index))
        {
            if (!chat)
            {
                choices.Add(new JsonObject { ["index"] = r.Index, ["text"] = r.Text, ["logprobs"] = null, ["finish_reason"] = r.FinishReason });
                continue;
            }
            var message = new JsonObject { ["role"] = "assistant", ["content"] = r.Text };
            var finish = r.FinishReason;
            if (job.Tools && ToolCalls.Parse(r.Text) is { Calls.Count: > 0 } parsed)
            {
                message["content"] = parsed.Content;
                message["tool_calls"] = parsed.Calls;
                finish = "tool_calls";
            }
            choices.Add(new JsonObject { ["index"] = r.Index, ["message"] = message, ["logprobs"] = null, ["finish_reason"] = finish });
        }
        await OpenAiError.Write(http.Response, 200, new JsonObject
        {
            ["id"] = id, ["object"] = chat ? "chat.completion" : "text_completion", ["created"] = created, ["model"] = s.Model,
            ["choices"] = choices, ["usage"] = usage,
        });
    }

    /// <summary>Reads one choice's tokens to its end; `onDelta(text, first)` gets each piece of final text when streaming.</summary>
    static async Task<ChoiceResult> RunChoice(Job job, GenerationRequest request, int index, CancellationToken ct, Func<string, bool, Task>? onDelta)
    {
        using var sequence = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var answer = new AnswerText(job.Engine.Tokenizer, job.Settings.Stop, job.Tools ? ToolCalls.Open : null);
        var reader = job.Engine.Submit(request, sequence.Token);
        var first = true;
        async Task Emit(string delta)
        {
            if (onDelta is null || (delta.Length == 0 && !first)) return;
            await onDelta(delta, first);
            first = false;
        }
        var finish = FinishReasons.Cancelled;
        await foreach (var ev in reader.ReadAllAsync(CancellationToken.None))
        {
            if (ev.Error is { } error)
                throw error is TrainerUserException ? OpenAiError.Server($"model {job.Target.Id}: {error.Message}") : OpenAiError.Server($"generation failed: {error.GetType().Name}: {error.Message}");
            if (ev.FinishReason is { } reason) { finish = reason; break; }
            await Emit(answer.Add(ev.Token));
            if (answer.Stopped)
            {
                finish = FinishReasons.Stop;
                sequence.Cancel();   // the engine drops the sequence at its next step
                break;
            }
        }
        // With tools, the `<tool_call>` blocks come back as tool_calls in the last chunk, not as content.
        await Emit(job.Tools && ToolCalls.Parse(answer.Text) is { Calls.Count: > 0 } parsed ? answer.FlushContent(parsed.Content ?? "") : answer.Flush());
        ct.ThrowIfCancellationRequested();
        return new ChoiceResult(index, answer.Text, finish, answer.Tokens);
    }
}

/// <summary>Server-sent events: `data: {json}\n\n` per chunk, flushed at once, ending with `data: [DONE]`.</summary>
sealed class SseWriter(HttpResponse response)
{
    readonly SemaphoreSlim _lock = new(1, 1);
    bool _started;

    public async Task Send(JsonNode chunk) => await Write("data: " + chunk.ToJsonString() + "\n\n");

    public Task Done() => Write("data: [DONE]\n\n");

    async Task Write(string text)
    {
        await _lock.WaitAsync();
        try
        {
            if (!_started)
            {
                response.StatusCode = 200;
                response.ContentType = "text/event-stream";
                response.Headers.CacheControl = "no-cache";
                _started = true;
            }
            await response.WriteAsync(text);
            await response.Body.FlushAsync();
        }
        finally { _lock.Release(); }
    }
}
