// Synth's client against a real server: the requests it sends (UPSTREAM.md §2, §8: payload shapes,
// headers, paths under /api and /api/v1) and the fields it reads back. No trainer is attached, so
// jobs stay queued; training itself is covered by the CLI's end-to-end tests.
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;

namespace Anneal.Server.Tests.Upstream;

public class UpstreamClientTests
{
    /// <summary>The body upstream's builder sends (build_sft_payload + prepare_sft_job_payload).</summary>
    static JsonObject UpstreamJob(string model, string trainingFileId, string? validationFileId, string mode = "lora", bool useQlora = false) => new()
    {
        ["model"] = model,
        ["hyperparameters"] = new JsonObject
        {
            ["n_epochs"] = 1, ["batch_size"] = 2, ["gradient_accumulation_steps"] = 2, ["sequence_length"] = 256,
            ["learning_rate"] = 1e-4, ["warmup_ratio"] = 0.1, ["train_kind"] = "peft",
            ["parallelism"] = new JsonObject { ["use_deepspeed"] = true, ["fsdp"] = false, ["bf16"] = true },
            ["evaluation_strategy"] = "steps", ["eval_steps"] = 0, ["save_best_model_at_end"] = true,
            ["metric_for_best_model"] = "val.loss", ["greater_is_better"] = false,
        },
        ["training_type"] = "sft_offline",
        ["metadata"] = new JsonObject
        {
            ["effective_config"] = new JsonObject
            {
                ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 1, ["nodes"] = 1 },
                ["data"] = validationFileId is null
                    ? new JsonObject { ["topology"] = new JsonObject() }
                    : new JsonObject { ["topology"] = new JsonObject(), ["validation_files"] = new JsonArray(validationFileId) },
                ["training"] = new JsonObject { ["mode"] = mode, ["use_qlora"] = useQlora, ["validation"] = new JsonObject { ["enabled"] = true } },
            },
        },
        ["training_file_id"] = trainingFileId,
    };

    static async Task<string> UploadAsUpstreamAsync(TestServer t, string path)
    {
        // Multipart, field `file` as application/jsonl, form field purpose = fine-tune; only `id` is read.
        var response = await t.Http.PostAsync(path, TestServer.Multipart(TestServer.Dataset(4)));
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        var id = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
        // Readiness is read from `status` and must be one of upstream's ready values.
        var file = await t.WaitFileAsync(id);
        Assert.Contains(file.Status, new[] { "ready", "uploaded", "stored", "complete" });
        return id;
    }

    [Fact]
    public async Task The_upstream_payload_creates_a_lora_job_that_uses_its_validation_file_and_names_what_has_no_effect()
    {
        await using var t = await TestServer.StartAsync();
        var train = await UploadAsUpstreamAsync(t, "files");
        var val = await UploadAsUpstreamAsync(t, "learning/files");
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(UpstreamJob("qwen/QWEN3-0.6b", train, val)));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);

        // What a client shows first comes first (upstream prints the first 600 characters).
        var job = JsonNode.Parse(text)!.AsObject();
        Assert.Equal(["id", "status", "model", "fine_tuned_model", "error"], job.Select(p => p.Key).Take(5));
        Assert.True(text.IndexOf("\"status\"", StringComparison.Ordinal) < 600);
        Assert.Equal("Qwen/Qwen3-0.6B", job["model"]!.GetValue<string>()); // canonical case
        Assert.NotNull(job["updated_at"]);
        Assert.Equal(val, job["validation_file_id"]!.GetValue<string>()); // from data.validation_files
        var id = job["id"]!.GetValue<string>();

        var config = (await t.Http.GetFromJsonAsync<JsonObject>($"learning/jobs/{id}/config"))!;
        var settings = config["settings"]!;
        Assert.Equal("lora", settings["training"]!["mode"]!.GetValue<string>()); // train_kind "peft" and training.mode "lora"
        Assert.Equal(2, settings["training"]!["per_device_batch"]!.GetValue<int>()); // batch_size
        Assert.True(settings["training"]!["validation"]!["enabled"]!.GetValue<bool>());
        Assert.True(settings["training"]!["validation"]!["save_best_model_at_end"]!.GetValue<bool>());
        Assert.Equal("H100", settings["compute"]!["gpu_type"]!.GetValue<string>());

        var events = await t.EventsAsync(id);
        var warned = events.Where(e => e.Type == EventTypes.ConfigWarning).Select(e => e.Data!["field"]!.GetValue<string>()).Order();
        Assert.Equal(["hyperparameters.parallelism.bf16", "hyperparameters.parallelism.fsdp", "hyperparameters.parallelism.use_deepspeed"], warned);
        Assert.All(events, e => Assert.Equal("warning", e.Type == EventTypes.ConfigWarning ? e.Level : "warning"));
    }

    public static TheoryData<string, bool, string> Refusals => new()
    {
        // The two spellings of the mode disagree: both named.
        { "full_finetune", false, "hyperparameters.train_kind" },
    };

    [Fact]
    public async Task Qlora_inside_effective_config_creates_a_qlora_job()
    {
        await using var t = await TestServer.StartAsync();
        var train = await UploadAsUpstreamAsync(t, "files");
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(UpstreamJob("Qwen/Qwen3-0.6B", train, null, "lora", true)));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var job = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        var config = await t.Http.GetStringAsync($"learning/jobs/{job["id"]!.GetValue<string>()}/config");
        Assert.Contains("\"qlora\"", config);
    }

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task Settings_that_cannot_run_are_a_422_naming_the_keys(string mode, bool useQlora, string expected)
    {
        await using var t = await TestServer.StartAsync();
        var train = await UploadAsUpstreamAsync(t, "files");
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(UpstreamJob("Qwen/Qwen3-0.6B", train, null, mode, useQlora)));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType); // upstream parses only JSON
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Contains(expected, problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Status_commands_read_the_same_answers_under_api_v1()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        await t.StartJobAsync(job.Id);
        var v1 = new HttpClient { BaseAddress = new Uri(t.Server.BaseUrl + "/api/v1/") };
        v1.DefaultRequestHeaders.Authorization = t.Http.DefaultRequestHeaders.Authorization;

        foreach (var client in new[] { t.Http, v1 })
        {
            var got = (await client.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}"))!;
            Assert.Equal("queued", got["status"]!.GetValue<string>());

            var status = (await client.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}/status"))!;
            Assert.Equal(("queued", job.Id), (status["status"]!.GetValue<string>(), status["id"]!.GetValue<string>()));
            Assert.NotNull(status["updated_at"]);

            var timeline = (await client.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}/timeline?limit=10"))!;
            Assert.Equal(["created", "queued"], timeline["events"]!.AsArray().Select(e => e!["phase"]!.GetValue<string>()));
            Assert.All(timeline["events"]!.AsArray(), e => Assert.NotNull(e!["created_at"]));

            var config = (await client.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}/config"))!;
            Assert.Equal(1, config["hyperparameters"]!["n_epochs"]!.GetValue<int>());

            var events = (await client.GetFromJsonAsync<JsonObject>($"learning/jobs/{job.Id}/events?since_seq=0&limit=200"))!["events"]!.AsArray();
            var ids = events.Select(e => e!["id"]!.GetValue<string>()).ToList();
            Assert.Equal(ids.Count, ids.Distinct().Count());
            Assert.All(events, e => Assert.StartsWith(job.Id + ":", e!["id"]!.GetValue<string>()));

            Assert.Empty((await client.GetFromJsonAsync<JsonObject>("learning/models/rl"))!["data"]!.AsArray());
            Assert.Empty((await client.GetFromJsonAsync<JsonObject>($"jobs/{job.Id}/runs"))!["runs"]!.AsArray());
            Assert.NotEmpty((await client.GetFromJsonAsync<JsonObject>("learning/jobs?status=queued&type=sft_offline&limit=20"))!["jobs"]!.AsArray());
            Assert.NotEmpty((await client.GetFromJsonAsync<JsonObject>("models"))!["data"]!.AsArray());
            var missing = await client.GetAsync("learning/models/ft:Qwen/Qwen3-0.6B:job_nope");
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
            Assert.Contains("ft:Qwen/Qwen3-0.6B:job_nope", await missing.Content.ReadAsStringAsync());
            Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("learning/jobs/job_nope/timeline")).StatusCode);
        }
        Assert.Equal(HttpStatusCode.OK, (await v1.GetAsync("health")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await new HttpClient().GetAsync(t.Server.BaseUrl + "/api/v1/learning/jobs")).StatusCode);
    }

    [Fact]
    public void The_registry_knows_every_upstream_sft_model_id_in_canonical_case_with_an_honest_reason()
    {
        string[] upstream =
        [
            "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-32B",
            "Qwen/Qwen3-4B-2507", "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507", "Qwen/Qwen3-4B-Instruct-2507-FP8",
            "Qwen/Qwen3-4B-Thinking-2507-FP8", "Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Thinking-2507-FP8",
            "Qwen/Qwen3-235B-A22B-Instruct-2507", "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8", "Qwen/Qwen3-Coder-30B-A3B-Instruct",
            "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", "Qwen/Qwen3-Coder-480B-A35B-Instruct", "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8",
            "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-8B-Thinking", "Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Thinking",
        ];
        foreach (var id in upstream)
        {
            var found = ModelRegistry.Find(id.ToUpperInvariant());
            Assert.True(found is not null, id);
            Assert.Equal(id, found.Id);
            Assert.True(found.Trainable || !string.IsNullOrEmpty(found.TrainableNote), id);
        }
        Assert.True(ModelRegistry.Find("qwen/qwen3-4b-instruct-2507")!.Trainable);
        Assert.Contains("FP8", ModelRegistry.Find("Qwen/Qwen3-4B-Instruct-2507-FP8")!.TrainableNote);
        Assert.Contains("mixture-of-experts", ModelRegistry.Find("Qwen/Qwen3-Coder-30B-A3B-Instruct")!.TrainableNote);
        Assert.Equal(ModelRegistry.All.Count, ModelRegistry.All.Select(m => m.Id.ToLowerInvariant()).Distinct().Count());
    }
}
