using System.Text.Json.Nodes;
using Anneal.Core.Datasets;

namespace Anneal.Core.Tests.Datasets;

public class DatasetRecordsTests
{
    [Fact]
    public void Legacy_images_become_parts_of_the_first_user_message()
    {
        var record = JsonNode.Parse("""
            {"images": ["a.png", {"url": "https://x.example/b.png"}], "image_url": "c.png",
             "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "What is this?"},
                          {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "Sure?"}]}
            """)!.AsObject();
        var n = DatasetRecords.Normalize(record);
        Assert.False(n.ContainsKey("images"));
        Assert.False(n.ContainsKey("image_url"));
        var content = n["messages"]![1]!["content"]!.AsArray();
        Assert.Equal(
            """[{"type":"image_url","image_url":{"url":"a.png"}},{"type":"image_url","image_url":{"url":"https://x.example/b.png"}},{"type":"image_url","image_url":{"url":"c.png"}},{"type":"text","text":"What is this?"}]""",
            content.ToJsonString());
        Assert.Equal("Sure?", n["messages"]![3]!["content"]!.GetValue<string>());
    }

    [Fact]
    public void Existing_parts_are_kept_after_the_images()
    {
        var record = JsonNode.Parse("""{"image_url": {"url": "a.png"}, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "A"}]}""")!.AsObject();
        var content = DatasetRecords.Normalize(record)["messages"]![0]!["content"]!.AsArray();
        Assert.Equal(2, content.Count);
        Assert.Equal("image_url", content[0]!["type"]!.GetValue<string>());
        Assert.Equal("Hi", content[1]!["text"]!.GetValue<string>());
    }

    [Fact]
    public void Records_without_legacy_fields_are_unchanged()
    {
        const string json = """{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"A"}]}""";
        Assert.Equal(json, DatasetRecords.Normalize(JsonNode.Parse(json)!.AsObject()).ToJsonString());
    }

    [Fact]
    public void Read_yields_normalised_records_with_line_numbers()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "\n" + """{"images": ["a.png"], "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}""" + "\n");
            var (line, record) = Assert.Single(DatasetRecords.Read(path));
            Assert.Equal(2, line);
            Assert.Equal(2, record["messages"]![0]!["content"]!.AsArray().Count);
        }
        finally { File.Delete(path); }
    }
}
