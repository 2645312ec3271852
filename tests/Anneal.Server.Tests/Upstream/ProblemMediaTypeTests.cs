// Problem details are sent as application/problem+json only to a client that asks for it; every
// other client (Synth's, which parses only application/json) gets the same body as application/json.
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Anneal.Server.Tests.Upstream;

public class ProblemMediaTypeTests
{
    public static TheoryData<string?, string> Cases => new()
    {
        { null, "application/json" },
        { "application/json", "application/json" },
        { "*/*", "application/json" },
        { "application/problem+json", "application/problem+json" },
        { "application/json, application/problem+json;q=0.9", "application/problem+json" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Media_type_follows_the_Accept_header_and_the_body_is_the_same(string? accept, string expected)
    {
        await using var t = await TestServer.StartAsync();
        async Task<HttpResponseMessage> Send(HttpClient client, HttpMethod method, string url, HttpContent? content = null)
        {
            var request = new HttpRequestMessage(method, url) { Content = content };
            if (accept is not null) request.Headers.Accept.ParseAdd(accept);
            return await client.SendAsync(request);
        }
        var answers = new[]
        {
            (await Send(t.Http, HttpMethod.Post, "learning/jobs", new StringContent("""{"model":"anneal/tiny-qwen3"}""", Encoding.UTF8, "application/json")), HttpStatusCode.UnprocessableEntity),
            (await Send(t.Http, HttpMethod.Get, "learning/jobs/job_missing"), HttpStatusCode.NotFound),
            (await Send(t.Http, HttpMethod.Get, "learning/no-such-route"), HttpStatusCode.NotFound),
            (await Send(t.Client("wrong-key"), HttpMethod.Get, "learning/jobs"), HttpStatusCode.Unauthorized),
        };
        foreach (var (response, status) in answers)
        {
            Assert.Equal(status, response.StatusCode);
            Assert.Equal(expected, response.Content.Headers.ContentType?.MediaType);
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
            Assert.Equal((int)status, body["status"]!.GetValue<int>());
            Assert.False(string.IsNullOrEmpty(body["detail"]?.GetValue<string>()), body.ToJsonString());
        }
    }
}
