// GET/POST/DELETE /api/keys for an organisation's admin key: the organisation's keys only, a
// non-admin key is refused, another organisation's key id is not found, revocation is immediate.
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Server.Auth;

namespace Anneal.Server.Tests;

public class KeysApiTests
{
    [Fact]
    public async Task An_admin_key_lists_creates_and_revokes_its_organisations_keys_and_revocation_is_immediate()
    {
        await using var t = await TestServer.StartAsync();
        using var acme = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));

        var listed = JsonNode.Parse(await t.Http.GetStringAsync("keys"))!["data"]!.AsArray();
        var own = Assert.Single(listed);
        Assert.Equal("default", own!["org"]!.GetValue<string>());
        Assert.True(own["admin"]!.GetValue<bool>());
        Assert.Null(own["key"]);

        var response = await t.Http.PostAsync("keys", null);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var created = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.False(created["admin"]!.GetValue<bool>());
        using var user = t.Client(created["key"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await user.GetAsync("learning/jobs")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await user.GetAsync("keys")).StatusCode); // not an admin key

        // Another organisation's key id does not exist for this one.
        var acmeKeyId = JsonNode.Parse(await acme.GetStringAsync("keys"))!["data"]![0]!["id"]!.GetValue<string>();
        Assert.Equal(HttpStatusCode.NotFound, (await t.Http.DeleteAsync($"keys/{acmeKeyId}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await acme.GetAsync("learning/jobs")).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await t.Http.DeleteAsync($"keys/{created["id"]!.GetValue<string>()}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await user.GetAsync("learning/jobs")).StatusCode);
    }

    [Theory]
    [InlineData("{\"admin\": \"yes\"}", "admin")]
    [InlineData("{\"role\": \"owner\"}", "role")]
    [InlineData("[1]", null)]
    [InlineData("{oops", null)]
    public async Task A_bad_key_request_is_a_400_naming_the_field(string body, string? field)
    {
        await using var t = await TestServer.StartAsync();
        var response = await t.Http.PostAsync("keys", new StringContent(body, Encoding.UTF8, "application/json"));
        var problem = await TestServer.ProblemAsync(response, HttpStatusCode.BadRequest);
        if (field is not null) Assert.Equal(field, problem["errors"]![0]!["field"]!.GetValue<string>());
    }
}
