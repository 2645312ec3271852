using System.Text;
using Anneal.Core.Contracts;
using Anneal.Core.Datasets;

namespace Anneal.Core.Tests.Datasets;

public class DatasetValidatorTests
{
    const string Good = """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}""";

    static DatasetReport Validate(string text, bool vision = false, int maxShown = 20, bool localPaths = false) =>
        Validate(Encoding.UTF8.GetBytes(text), vision, maxShown, localPaths);

    static DatasetReport Validate(byte[] bytes, bool vision = false, int maxShown = 20, bool localPaths = false) =>
        DatasetValidator.Validate(new MemoryStream(bytes), new DatasetValidationOptions(maxShown, vision, LocalImagePaths: localPaths));

    /// <summary>The one error of a one-error dataset, after checking it carries the expected line.</summary>
    static ErrorItem OnlyError(string text, int line = 1, bool vision = false)
    {
        var report = Validate(text, vision);
        Assert.False(report.IsValid);
        var e = Assert.Single(report.Errors);
        Assert.Equal(1, report.TotalErrors);
        Assert.Equal(line, e.Line);
        return e;
    }

    [Fact]
    public void A_simple_chat_dataset_is_valid()
    {
        var report = Validate(Good + "\n" + Good + "\n");
        Assert.True(report.IsValid);
        Assert.Equal(2, report.NumExamples);
        Assert.Empty(report.Errors);
    }

    [Fact]
    public void System_prompt_multi_turn_tool_calls_and_tools_are_valid()
    {
        const string record = """
            {"messages": [
              {"role": "system", "content": "You are a weather bot."},
              {"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
              {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"},
              {"role": "assistant", "content": "It is 18 °C in Paris.", "reasoning_content": "The tool said 18."},
              {"role": "user", "content": "Thanks"},
              {"role": "assistant", "content": [{"type": "text", "text": "You're welcome."}]}],
             "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
             "metadata": {"source": "unit-test"}}
            """;
        var report = Validate(record.ReplaceLineEndings(" "));
        Assert.Empty(report.Errors);
        Assert.True(report.IsValid);
    }

    [Fact]
    public void Bom_crlf_and_blank_lines_are_accepted_and_lines_keep_their_numbers()
    {
        var text = "\uFEFF" + Good + "\r\n\r\n   \n" + Good + "\r\n{\"messages\": 5}\r\n";
        var report = Validate(Encoding.UTF8.GetBytes(text));
        Assert.Equal(3, report.NumExamples);
        var e = Assert.Single(report.Errors);
        Assert.Equal(5, e.Line);
        Assert.Equal("messages", e.Field);
        Assert.Equal("Line 5: messages: must be a list of messages, got a number", e.ToString());
    }

    [Fact]
    public void An_empty_file_is_a_clear_error()
    {
        foreach (var text in new[] { "", "\n\n  \n" })
        {
            var report = Validate(text);
            Assert.False(report.IsValid);
            Assert.Equal(0, report.NumExamples);
            Assert.Contains("no examples", Assert.Single(report.Errors).Message);
        }
    }

    [Fact]
    public void Malformed_json_names_the_line_and_position()
    {
        var e = OnlyError(Good + "\n{\"messages\": [}\n", line: 2);
        Assert.StartsWith("malformed JSON at byte 15", e.Message);
    }

    [Fact]
    public void Invalid_utf8_names_the_line_and_byte()
    {
        var bytes = Encoding.UTF8.GetBytes(Good + "\n" + Good + "\n").ToList();
        var bad = Encoding.UTF8.GetBytes("{\"messages\": \"").Concat(new byte[] { 0xC3, 0x28 }).Concat(Encoding.UTF8.GetBytes("\"}\n"));
        bytes.AddRange(bad);
        var report = Validate(bytes.ToArray());
        var e = Assert.Single(report.Errors);
        Assert.Equal(3, e.Line);
        Assert.Equal("invalid UTF-8 at byte 15 of the line; save the file as UTF-8", e.Message);
    }

    [Fact]
    public void A_record_that_is_not_an_object_is_rejected()
    {
        var e = OnlyError("[1, 2]");
        Assert.Equal("expected a JSON object with \"messages\", got a list", e.Message);
    }

    [Fact]
    public void Missing_messages_is_rejected_and_a_typo_gets_a_suggestion()
    {
        var report = Validate("""{"mesages": []}""");
        Assert.Equal(2, report.TotalErrors);
        Assert.Contains(report.Errors, e => e.Field == "mesages" && e.Message.Contains("did you mean 'messages'?"));
        Assert.Contains(report.Errors, e => e.Field == "messages" && e.Message.StartsWith("required"));
    }

    [Fact]
    public void Fewer_than_two_messages_is_rejected()
    {
        var e = OnlyError("""{"messages": [{"role": "assistant", "content": "Hello"}]}""");
        Assert.Equal("messages", e.Field);
        Assert.Equal("needs at least 2 messages (a prompt and an assistant reply), got 1", e.Message);
    }

    [Fact]
    public void A_conversation_without_an_assistant_is_rejected()
    {
        var e = OnlyError("""{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]}""");
        Assert.Equal("messages", e.Field);
        Assert.Contains("at least one message with role \"assistant\"", e.Message);
    }

    [Fact]
    public void A_bad_role_names_index_value_and_suggestion()
    {
        var e = OnlyError(Good + "\n" + """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assitant", "content": "Yo"}, {"role": "assistant", "content": "x"}]}""", line: 2);
        Assert.Equal("messages[1].role", e.Field);
        Assert.Equal("must be one of \"system\", \"user\", \"assistant\", \"tool\", got \"assitant\"; did you mean 'assistant'?", e.Message);
    }

    [Fact]
    public void A_missing_role_and_content_are_reported()
    {
        var report = Validate("""{"messages": [{"content": "Hi"}, {"role": "user"}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal(["messages[0].role", "messages[1].content"], report.Errors.Select(e => e.Field));
    }

    [Fact]
    public void Unknown_message_keys_are_rejected_with_suggestion()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "contnet": "Hi", "content": "Hi"}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal("messages[0].contnet", e.Field);
        Assert.Contains("did you mean 'content'?", e.Message);
    }

    [Fact]
    public void Content_of_a_wrong_type_is_rejected()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal("messages[0].content", e.Field);
        Assert.EndsWith("got a number", e.Message);
    }

    [Fact]
    public void Assistant_without_content_needs_tool_calls()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null}]}""");
        Assert.Equal("messages[1].content", e.Field);
        Assert.Contains("only when the message has tool_calls", e.Message);
    }

    [Fact]
    public void Bad_parts_are_named()
    {
        var report = Validate("""{"messages": [{"role": "user", "content": [{"type": "txt", "text": "a"}, {"type": "text"}, "plain"]}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal(3, report.TotalErrors);
        Assert.Equal("messages[0].content[0].type", report.Errors[0].Field);
        Assert.Contains("did you mean 'text'?", report.Errors[0].Message);
        Assert.Equal("messages[0].content[1].text", report.Errors[1].Field);
        Assert.Equal("messages[0].content[2]", report.Errors[2].Field);
        Assert.Contains("got a string", report.Errors[2].Message);
    }

    [Fact]
    public void Tool_calls_must_have_the_openai_shape()
    {
        var report = Validate("""
            {"messages": [{"role": "user", "content": "Hi"},
              {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "func", "function": {"name": "f", "arguments": {"x": 1}}},
                {"id": "c2", "type": "function", "function": {"arguments": "{not json"}},
                {"id": "c3", "type": "function"}]}]}
            """.ReplaceLineEndings(" "));
        var byField = report.Errors.ToDictionary(e => e.Field!, e => e.Message);
        Assert.Equal("must be \"function\", got \"func\"", byField["messages[1].tool_calls[0].type"]);
        Assert.StartsWith("must be a string holding the JSON arguments", byField["messages[1].tool_calls[0].function.arguments"]);
        Assert.Equal("required: a non-empty string", byField["messages[1].tool_calls[1].function.name"]);
        Assert.StartsWith("must hold valid JSON", byField["messages[1].tool_calls[1].function.arguments"]);
        Assert.StartsWith("required", byField["messages[1].tool_calls[2].function"]);
        Assert.Equal(5, report.TotalErrors);
    }

    [Fact]
    public void Tool_calls_on_a_user_message_are_rejected()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi", "tool_calls": []}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal("messages[0].tool_calls", e.Field);
        Assert.Contains("only assistant messages", e.Message);
    }

    [Fact]
    public void A_tool_message_must_answer_an_earlier_call()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}, {"role": "assistant", "content": "A"}]}""");
        Assert.Equal("messages[1].tool_call_id", e.Field);
        Assert.Contains("\"nope\" does not match the id of any earlier tool call", e.Message);
    }

    [Fact]
    public void Tools_must_be_function_definitions()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}], "tools": [{"type": "function", "function": {"description": "d"}}]}""");
        Assert.Equal("tools[0].function.name", e.Field);
    }

    [Fact]
    public void Metadata_must_be_an_object()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}], "metadata": "x"}""");
        Assert.Equal("metadata", e.Field);
        Assert.Equal("must be an object, got a string", e.Message);
    }

    const string Multimodal = """{"messages": [{"role": "system", "content": [{"type": "text", "text": "You are a helpful guide."}]}, {"role": "user", "content": [{"type": "text", "text": "Describe the scene."}, {"type": "image_url", "image_url": {"url": "https://assets.example.com/frame.png"}}]}, {"role": "assistant", "content": [{"type": "text", "text": "The robot is holding a red cube."}]}]}""";

    [Fact]
    public void The_spec_multimodal_record_is_valid_for_a_vision_model()
    {
        var report = Validate(Multimodal, vision: true);
        Assert.Empty(report.Errors);
        Assert.True(report.IsValid);
    }

    [Fact]
    public void Image_parts_for_a_text_only_model_say_so()
    {
        var e = OnlyError(Multimodal);
        Assert.Equal("messages[1].content[1]", e.Field);
        Assert.Contains("the selected model is text-only", e.Message);
    }

    [Theory]
    [InlineData("data:image/png;base64,iVBORw0KGgo=", null)]
    [InlineData("frames/001.png", null)]
    [InlineData("http://example.com/a.png", "URL scheme \"http:\" is not supported")]
    [InlineData("file:///etc/passwd", "URL scheme \"file:\" is not supported")]
    [InlineData("/abs/a.png", "absolute path \"/abs/a.png\" is not inside the uploaded dataset")]
    [InlineData("../outside.png", "leaves the dataset folder")]
    [InlineData("data:text/plain;base64,aGk=", "must look like data:image/")]
    [InlineData("data:image/png;base64,@@@", "not valid base64")]
    [InlineData("", "is empty")]
    public void Image_urls_are_checked_by_shape(string url, string? problem)
    {
        var record = Multimodal.Replace("https://assets.example.com/frame.png", url);
        var report = Validate(record, vision: true, localPaths: true);
        if (problem is null)
        {
            Assert.Empty(report.Errors);
            return;
        }
        var e = Assert.Single(report.Errors);
        Assert.Equal("messages[1].content[1].image_url.url", e.Field);
        Assert.Contains(problem, e.Message);
    }

    [Theory]
    [InlineData("frames/001.png")]
    [InlineData("x.png")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.images/fedcba9876543210")]
    [InlineData("/srv/anneal/data/files/a.png")]
    [InlineData("../outside.png")]
    public void Local_paths_are_refused_where_no_files_come_with_the_dataset(string url)
    {
        var record = Multimodal.Replace("https://assets.example.com/frame.png", url);
        var e = Assert.Single(Validate(record, vision: true).Errors);
        Assert.Equal(1, e.Line);
        Assert.Equal("messages[1].content[1]", e.Field);
        Assert.StartsWith($"local image path \"{url[..Math.Min(url.Length, 57)]}", e.Message);
        Assert.Contains("cannot be read from an uploaded JSONL file; expected an https:// URL, a data:image/...;base64,... URI or an image file packed with the dataset", e.Message);
        Assert.True(Validate(record, vision: true, localPaths: true).IsValid != (url.StartsWith('/') || url.StartsWith("..")));
    }

    [Fact]
    public void Images_in_assistant_messages_are_rejected()
    {
        var e = OnlyError("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}]}""", vision: true);
        Assert.Equal("messages[1].content[0]", e.Field);
        Assert.Contains("assistant messages cannot contain images", e.Message);
    }

    [Fact]
    public void Legacy_images_are_accepted_for_vision_and_rejected_for_text()
    {
        var legacy = """{"images": ["https://x.example/a.png"], "image_url": {"url": "b.png"}, "messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A cat."}]}""";
        Assert.True(Validate(legacy, vision: true, localPaths: true).IsValid);
        Assert.Equal("image_url", Assert.Single(Validate(legacy, vision: true).Errors).Field);
        var e = OnlyError(legacy);
        Assert.Equal("images", e.Field);
        Assert.Contains("text-only", e.Message);
    }

    [Fact]
    public void Legacy_images_with_bad_urls_or_no_user_message_are_rejected()
    {
        var report = Validate("""{"images": ["/abs.png", 3], "messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]}""", vision: true);
        Assert.Equal(["images[0]", "images[1]", "images"], report.Errors.Select(e => e.Field));
        Assert.Contains("has none", report.Errors[2].Message);
    }

    [Fact]
    public void Only_the_first_errors_are_kept_but_all_are_counted()
    {
        var text = string.Join("\n", Enumerable.Repeat("""{"messages": []}""", 30));
        var report = Validate(text);
        Assert.Equal(20, report.Errors.Count);
        Assert.Equal(30, report.TotalErrors);
        Assert.Equal(30, report.NumExamples);
        Assert.Equal(Enumerable.Range(1, 20), report.Errors.Select(e => e.Line!.Value));
    }

    [Fact]
    public void A_large_dataset_streams_through()
    {
        // ~40k records (~4 MB) read line by line through a non-seekable stream.
        var path = Path.GetTempFileName();
        try
        {
            using (var w = new StreamWriter(path))
                for (var i = 0; i < 40_000; i++) w.WriteLine(Good);
            using var stream = new BufferedStream(File.OpenRead(path), 1000);
            var report = DatasetValidator.Validate(stream);
            Assert.True(report.IsValid);
            Assert.Equal(40_000, report.NumExamples);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TakeFirst_copies_the_first_records_without_blank_lines_or_bom()
    {
        var dir = Directory.CreateTempSubdirectory();
        try
        {
            var input = Path.Combine(dir.FullName, "in.jsonl");
            var lines = Enumerable.Range(0, 5).Select(i => Good.Replace("Hello!", $"Hello {i}")).ToList();
            File.WriteAllText(input, "\uFEFF" + lines[0] + "\n\n" + string.Join("\n", lines.Skip(1)), new UTF8Encoding(false));
            var output = Path.Combine(dir.FullName, "out.jsonl");
            Assert.Equal(3, DatasetValidator.TakeFirst(input, 3, output));
            Assert.Equal(lines.Take(3), File.ReadAllLines(output));
            Assert.Equal(5, DatasetValidator.TakeFirst(input, 10, output));
            using var s = File.OpenRead(input);
            Assert.Equal(5, DatasetValidator.CountExamples(s));
        }
        finally { dir.Delete(true); }
    }
}
