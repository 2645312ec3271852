// Jobs API against a real server (no trainer configured, so jobs stay queued): creation with every
// validation rule, Idempotency-Key, the state machine, listing, events, metrics, models.
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Models;
using Anneal.Server.Auth;

namespace Anneal.Server.Tests;

public class JobsTests
{
    [Fact]
    public async Task Create_returns_201_with_every_field_and_an_sft_created_event()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var body = new JsonObject
        {
            ["model"] = ModelRegistry.TinyModelId,
            ["training_file_id"] = file.Id,
            ["validation_file_id"] = file.Id,
            ["hyperparameters"] = new JsonObject { ["total_steps"] = 10, ["training_mode"] = "lora", ["lora"] = new JsonObject { ["r"] = 8 } },
            ["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_count"] = 1 } } },
            ["suffix"] = "demo",
        };
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(body));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        foreach (var key in new[] { "id", "job_id", "status", "model", "training_type", "training_file_id", "validation_file_id", "hyperparameters",
                     "created_at", "started_at", "finished_at", "fine_tuned_model", "trained_tokens", "error", "progress" })
            Assert.True(json.ContainsKey(key), $"missing {key}");
        Assert.Equal("created", json["status"]!.GetValue<string>());
        Assert.Equal("sft_offline", json["training_type"]!.GetValue<string>()); // default
        Assert.Equal(json["id"]!.GetValue<string>(), json["job_id"]!.GetValue<string>());
        Assert.Equal(8, json["hyperparameters"]!["lora"]!["r"]!.GetValue<int>());
        Assert.Equal(1, json["metadata"]!["effective_config"]!["compute"]!["gpu_count"]!.GetValue<int>());
        var id = json["id"]!.GetValue<string>();
        Assert.Equal(response.Headers.Location!.ToString(), $"/api/learning/jobs/{id}");
        var events = await t.EventsAsync(id);
        Assert.Equal([EventTypes.Created], events.Select(e => e.Type));
        Assert.Equal(1, events[0].Seq);
    }

    [Fact]
    public async Task Unknown_hyperparameters_and_bad_values_are_all_named_in_one_422()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var hp = new JsonObject { ["n_epochs"] = 1, ["lora_rnak"] = 8, ["learning_rate"] = -1, ["lr_scheduler"] = "wavy" };
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id, hyperparameters: hp)));
        var problem = await TestServer.ProblemAsync(response, HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.ValidationFailed, problem["code"]!.GetValue<string>());
        var errors = TestServer.ErrorsText(problem);
        Assert.Contains("hyperparameters.lora_rnak", errors);
        Assert.Contains("hyperparameters.learning_rate", errors);
        Assert.Contains("hyperparameters.lr_scheduler", errors);
        Assert.Empty((await t.Http.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);
    }

    [Fact]
    public async Task Unknown_or_untrainable_models_and_wrong_training_type_are_422()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var unknown = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id, "gpt-5"))), HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.UnknownModel, unknown["code"]!.GetValue<string>());
        Assert.Contains("gpt-5", unknown["detail"]!.GetValue<string>());

        var moe = ModelRegistry.All.First(m => !m.Trainable);
        var untrainable = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id, moe.Id))), HttpStatusCode.UnprocessableEntity);
        Assert.Contains(moe.TrainableNote!, untrainable["detail"]!.GetValue<string>());

        var someoneElsesFt = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id, "ft:Qwen/Qwen3-0.6B:job_x"))), HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.UnknownModel, someoneElsesFt["code"]!.GetValue<string>());

        var body = (JsonObject)TestServer.JobBody(file.Id);
        body["training_type"] = "dpo";
        var type = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(body)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("\"field\":\"training_type\"", TestServer.ErrorsText(type));
    }

    [Theory]
    [InlineData("training_mode", "qlora", false)]
    [InlineData("use_qlora", "true", false)]
    [InlineData("mode", "qlora", true)]
    [InlineData("use_qlora", "true", true)]
    public async Task Qlora_is_accepted_from_hyperparameters_or_the_upstream_effective_config(string key, string value, bool inEffectiveConfig)
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var body = (JsonObject)TestServer.JobBody(file.Id, "Qwen/Qwen3-0.6B");
        var setting = JsonNode.Parse(value is "true" ? "true" : $"\"{value}\"");
        if (inEffectiveConfig)
            // The upstream client's shape: the spec's mode = "full_finetune" stays next to the flag.
            body["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["training"] = new JsonObject
                { ["mode"] = key == "mode" ? setting : "full_finetune", ["use_qlora"] = key == "use_qlora" ? setting : false } } };
        else
            body["hyperparameters"]![key] = setting;
        var response = await t.Http.PostAsync("learning/jobs", TestServer.Json(body));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var job = (await response.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options))!;
        var events = await t.Http.GetStringAsync($"learning/jobs/{job.Id}/events");
        Assert.Contains("(qlora)", events);
    }

    [Fact]
    public async Task Sequence_length_above_the_models_context_length_is_422_naming_both_numbers_and_creates_no_job()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var problem = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id,
            hyperparameters: new JsonObject { ["n_epochs"] = 1, ["sequence_length"] = 100000 }))), HttpStatusCode.UnprocessableEntity);
        Assert.Equal(ErrorCodes.UserConfigError, problem["code"]!.GetValue<string>());
        Assert.Contains("sequence_length 100000 exceeds the context length 2048 of anneal/tiny-qwen3", problem["detail"]!.GetValue<string>());
        Assert.Contains("\"field\":\"hyperparameters.sequence_length\"", TestServer.ErrorsText(problem));
        Assert.Empty((await t.Http.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);

        // Together with a suffix that is too long: both problems, one 422.
        var body = (JsonObject)TestServer.JobBody(file.Id, hyperparameters: new JsonObject { ["n_epochs"] = 1, ["sequence_length"] = 4096 });
        body["suffix"] = new string('x', 65);
        var both = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(body)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("2 problems", both["detail"]!.GetValue<string>());
        Assert.Contains("at most 64", both["detail"]!.GetValue<string>());
        Assert.Contains("4096", both["detail"]!.GetValue<string>());
    }

    // Every rank of a job runs on one host: [compute] nodes > 1 is refused at creation (upstream's
    // example configs all say nodes = 1, which is accepted), whatever the spelling of the number.
    [Theory]
    [InlineData("2")]
    [InlineData("\"4\"")]
    public async Task Several_nodes_are_422_naming_compute_nodes_and_create_no_job(string nodes)
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var body = (JsonObject)TestServer.JobBody(file.Id, hyperparameters: new JsonObject { ["n_epochs"] = 1 });
        body["metadata"] = new JsonObject { ["effective_config"] = new JsonObject { ["compute"] = new JsonObject { ["gpu_type"] = "H100", ["gpu_count"] = 4, ["nodes"] = JsonNode.Parse(nodes) } } };
        var problem = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(body)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("\"field\":\"metadata.effective_config.compute.nodes\"", TestServer.ErrorsText(problem));
        Assert.Contains($"is {nodes.Trim('"')}; several hosts per job are not supported yet", problem["detail"]!.GetValue<string>());
        Assert.Empty((await t.Http.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);

        body["metadata"]!["effective_config"]!["compute"]!["nodes"] = 1;
        Assert.Equal(HttpStatusCode.Created, (await t.Http.PostAsync("learning/jobs", TestServer.Json(body))).StatusCode);
    }

    [Fact]
    public async Task Malformed_json_and_wrong_field_types_are_400_naming_the_field()
    {
        await using var t = await TestServer.StartAsync();
        async Task<JsonObject> Post(string raw) => await TestServer.ProblemAsync(
            await t.Http.PostAsync("learning/jobs", new StringContent(raw, Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);

        var broken = await Post("""{"model": "anneal/tiny-qwen3", """);
        Assert.Contains("Malformed JSON", broken["detail"]!.GetValue<string>());
        var wrongType = await Post("""{"model": 42, "training_file_id": "file_x", "hyperparameters": {"n_epochs": 1}}""");
        Assert.Contains("'model'", wrongType["detail"]!.GetValue<string>());
        Assert.Contains("\"field\":\"model\"", TestServer.ErrorsText(wrongType));
        var hpNotObject = await Post("""{"model": "anneal/tiny-qwen3", "training_file_id": "file_x", "hyperparameters": [1]}""");
        Assert.Contains("hyperparameters", hpNotObject["detail"]!.GetValue<string>());
        var unknownField = await Post("""{"model": "anneal/tiny-qwen3", "training_file": "file_x", "hyperparameters": {"n_epochs": 1}}""");
        Assert.Contains("training_file", unknownField["detail"]!.GetValue<string>());
        var notObject = await Post("[]");
        Assert.Contains("JSON object", notObject["detail"]!.GetValue<string>());
        await Post("");
    }

    [Fact]
    public async Task A_file_still_processing_gives_409_file_not_ready_and_a_failed_file_422()
    {
        await using var t = await TestServer.StartAsync();
        var good = await t.UploadReadyAsync();
        // Uploads of invalid text are refused outright; a file fails after its upload only in the
        // image step, as this one does (its image is on a loopback address, which is never fetched).
        var bad = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(TestServer.LineWithRefusedImage + "\n"));
        Assert.Equal(FileStatus.Failed, bad.Status);
        var failed = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(bad.Id))), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("failed validation", failed["detail"]!.GetValue<string>());

        // Make the good file look unvalidated (as right after upload).
        t.Sql($"UPDATE files SET status = 'processing' WHERE id = '{good.Id}'");
        var notReady = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(good.Id))), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.FileNotReady, notReady["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task Idempotency_key_returns_the_same_job_and_rejects_a_different_body()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        HttpRequestMessage Request(object body)
        {
            var r = new HttpRequestMessage(HttpMethod.Post, "learning/jobs") { Content = TestServer.Json(body) };
            r.Headers.Add("Idempotency-Key", "submit-1");
            return r;
        }
        var first = await t.Http.SendAsync(Request(TestServer.JobBody(file.Id)));
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        var second = await t.Http.SendAsync(Request(TestServer.JobBody(file.Id)));
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var a = await first.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options);
        var b = await second.Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options);
        Assert.Equal(a!.Id, b!.Id);
        var different = await t.Http.SendAsync(Request(TestServer.JobBody(file.Id, hyperparameters: new JsonObject { ["n_epochs"] = 2 })));
        var problem = await TestServer.ProblemAsync(different, HttpStatusCode.UnprocessableEntity);
        Assert.Equal(a.Id, problem["job_id"]!.GetValue<string>());
        Assert.Single((await t.Http.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);

        // The same key in another organisation is a different key.
        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var otherFile = await t.UploadReadyAsync(TestServer.Dataset(4), other);
        var r2 = new HttpRequestMessage(HttpMethod.Post, "learning/jobs") { Content = TestServer.Json(TestServer.JobBody(otherFile.Id)) };
        r2.Headers.Add("Idempotency-Key", "submit-1");
        Assert.Equal(HttpStatusCode.Created, (await other.SendAsync(r2)).StatusCode);
    }

    [Fact]
    public async Task State_machine_start_queues_cancel_cancels_and_illegal_moves_are_409_with_the_current_status()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var job = await t.CreateJobAsync(file.Id);
        var queued = await t.StartJobAsync(job.Id);
        Assert.Equal(JobStatus.Queued, queued.Status);
        var again = await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/start", null), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.InvalidState, again["code"]!.GetValue<string>());
        Assert.Equal("queued", again["current_status"]!.GetValue<string>());
        Assert.Contains("'queued'", again["detail"]!.GetValue<string>());

        var pause = await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/pause", null), HttpStatusCode.Conflict);
        Assert.Equal("queued", pause["current_status"]!.GetValue<string>());
        var resume = await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/resume", null), HttpStatusCode.Conflict);
        Assert.Equal("queued", resume["current_status"]!.GetValue<string>());

        var cancelled = await (await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null)).Content.ReadFromJsonAsync<JobObject>(AnnealJson.Options);
        Assert.Equal(JobStatus.Cancelled, cancelled!.Status);
        Assert.NotNull(cancelled.FinishedAt);
        var cancelAgain = await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null), HttpStatusCode.Conflict);
        Assert.Equal("cancelled", cancelAgain["current_status"]!.GetValue<string>());
        await TestServer.ProblemAsync(await t.Http.PostAsync($"learning/jobs/{job.Id}/start", null), HttpStatusCode.Conflict);

        var events = await t.EventsAsync(job.Id);
        Assert.Equal([EventTypes.Created, EventTypes.Queued, EventTypes.Cancelled], events.Select(e => e.Type));
        Assert.Equal([1L, 2L, 3L], events.Select(e => e.Seq));
        Assert.Equal([3L], (await t.Http.GetFromJsonAsync<EventList>($"learning/jobs/{job.Id}/events?since_seq=2", AnnealJson.Options))!.Events.Select(e => e.Seq));
        await TestServer.ProblemAsync(await t.Http.GetAsync($"learning/jobs/{job.Id}/events?since_seq=x"), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task Another_organisations_file_is_a_validation_error_on_training_file_id_that_reveals_nothing()
    {
        await using var t = await TestServer.StartAsync();
        var theirs = await t.UploadReadyAsync();
        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        var foreign = await TestServer.ProblemAsync(await other.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(theirs.Id))), HttpStatusCode.UnprocessableEntity);
        var missing = await TestServer.ProblemAsync(await other.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody("file_doesnotexist"))), HttpStatusCode.UnprocessableEntity);
        foreach (var p in new[] { foreign, missing })
        {
            Assert.Equal(ErrorCodes.ValidationFailed, p["code"]!.GetValue<string>());
            Assert.Equal("Validation failed", p["title"]!.GetValue<string>());
            Assert.EndsWith("/validation-failed", p["type"]!.GetValue<string>());
            var error = Assert.Single(p["errors"]!.AsArray());
            Assert.Equal("training_file_id", error!["field"]!.GetValue<string>());
            Assert.Contains("no such file", error["message"]!.GetValue<string>());
            Assert.Contains("your organisation", error["message"]!.GetValue<string>());
        }
        // Same wording for a foreign id as for an unknown one, apart from the id itself.
        Assert.Equal(foreign["errors"]![0]!["message"]!.GetValue<string>().Replace(theirs.Id, "ID"),
                     missing["errors"]![0]!["message"]!.GetValue<string>().Replace("file_doesnotexist", "ID"));
        Assert.DoesNotContain(theirs.Filename, foreign.ToJsonString());
    }

    [Fact]
    public async Task Another_organisations_job_is_404_everywhere()
    {
        await using var t = await TestServer.StartAsync();
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        using var other = t.Client(await ApiKeys.CreateAsync(t.DataDir, "acme"));
        foreach (var path in new[] { "", "/events", "/metrics", "/checkpoints", "/logs" })
            await TestServer.ProblemAsync(await other.GetAsync($"learning/jobs/{job.Id}{path}"), HttpStatusCode.NotFound);
        foreach (var action in new[] { "start", "cancel", "pause", "resume" })
            await TestServer.ProblemAsync(await other.PostAsync($"learning/jobs/{job.Id}/{action}", null), HttpStatusCode.NotFound);
        Assert.Empty((await other.GetFromJsonAsync<JobList>("learning/jobs", AnnealJson.Options))!.Jobs);
        Assert.Equal(JobStatus.Created, (await t.GetJobAsync(job.Id)).Status);
    }

    [Fact]
    public async Task List_filters_by_status_and_pages_with_after()
    {
        await using var t = await TestServer.StartAsync();
        var file = await t.UploadReadyAsync();
        var jobs = new List<JobObject>();
        for (var i = 0; i < 4; i++) jobs.Add(await t.CreateJobAsync(file.Id));
        await t.StartJobAsync(jobs[1].Id);
        await t.StartJobAsync(jobs[3].Id);
        var queued = (await t.Http.GetFromJsonAsync<JobList>("learning/jobs?status=queued", AnnealJson.Options))!;
        Assert.Equal([jobs[3].Id, jobs[1].Id], queued.Jobs.Select(j => j.Id));
        var page1 = (await t.Http.GetFromJsonAsync<JobList>("learning/jobs?limit=3", AnnealJson.Options))!;
        Assert.True(page1.HasMore);
        var page2 = (await t.Http.GetFromJsonAsync<JobList>($"learning/jobs?limit=3&after={page1.Jobs[^1].Id}", AnnealJson.Options))!;
        Assert.Equal([jobs[0].Id], page2.Jobs.Select(j => j.Id));
        Assert.False(page2.HasMore);
        var bad = await TestServer.ProblemAsync(await t.Http.GetAsync("learning/jobs?status=done"), HttpStatusCode.BadRequest);
        Assert.Contains("\"field\":\"status\"", TestServer.ErrorsText(bad));
    }

    [Fact]
    public async Task Models_lists_the_registry_and_learning_models_starts_empty()
    {
        await using var t = await TestServer.StartAsync();
        var models = (await t.Http.GetFromJsonAsync<BaseModelList>("models", AnnealJson.Options))!;
        Assert.Equal(ModelRegistry.All.Select(m => m.Id), models.Data.Select(m => m.Id));
        var tiny = JsonNode.Parse(await t.Http.GetStringAsync("models"))!["data"]!.AsArray().First(m => m!["id"]!.GetValue<string>() == ModelRegistry.TinyModelId)!;
        foreach (var key in new[] { "family", "parameters", "context_length", "supports_vision", "max_images_per_message", "precision", "training_modes" })
            Assert.NotNull(tiny[key]);
        Assert.Empty((await t.Http.GetFromJsonAsync<FineTunedModelList>("learning/models", AnnealJson.Options))!.Data);
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        Assert.Empty((await t.Http.GetFromJsonAsync<MetricList>($"learning/jobs/{job.Id}/metrics", AnnealJson.Options))!.Points);
        Assert.Empty((await t.Http.GetFromJsonAsync<CheckpointList>($"learning/jobs/{job.Id}/checkpoints", AnnealJson.Options))!.Data);
        Assert.Equal("", await t.Http.GetStringAsync($"learning/jobs/{job.Id}/logs"));
        await TestServer.ProblemAsync(await t.Http.GetAsync($"learning/jobs/{job.Id}/metrics?after_step=x"), HttpStatusCode.BadRequest);
        await TestServer.ProblemAsync(await t.Http.GetAsync("learning/jobs/job_missing"), HttpStatusCode.NotFound);
        var noRoute = await t.Http.GetAsync("learning/nothing-here");
        Assert.Equal(HttpStatusCode.NotFound, noRoute.StatusCode);
        Assert.Equal("application/json", noRoute.Content.Headers.ContentType?.MediaType); // no Accept: problem+json
    }

    [Fact]
    public async Task Sse_streams_events_until_the_job_is_terminal()
    {
        await using var t = await TestServer.StartAsync();
        var job = await t.CreateJobAsync((await t.UploadReadyAsync()).Id);
        var request = new HttpRequestMessage(HttpMethod.Get, $"learning/jobs/{job.Id}/events");
        request.Headers.Accept.ParseAdd("text/event-stream");
        using var response = await t.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var reading = response.Content.ReadAsStringAsync();
        await Task.Delay(300);
        Assert.False(reading.IsCompleted); // still streaming: the job is not terminal
        await t.StartJobAsync(job.Id);
        await t.Http.PostAsync($"learning/jobs/{job.Id}/cancel", null);
        var text = await reading.WaitAsync(TimeSpan.FromSeconds(20));
        var types = text.Split('\n').Where(l => l.StartsWith("event: ")).Select(l => l[7..]).ToList();
        Assert.Equal([EventTypes.Created, EventTypes.Queued, EventTypes.Cancelled], types);
        Assert.Contains("id: 3\n", text);
        var data = text.Split('\n').First(l => l.StartsWith("data: "))[6..];
        Assert.Equal(job.Id, JsonNode.Parse(data)!["job_id"]!.GetValue<string>());

        // A reconnecting client resumes after Last-Event-ID; the job is terminal, so the stream ends at once.
        var resume = new HttpRequestMessage(HttpMethod.Get, $"learning/jobs/{job.Id}/events");
        resume.Headers.Accept.ParseAdd("text/event-stream");
        resume.Headers.Add("Last-Event-ID", "2");
        var rest = await (await t.Http.SendAsync(resume)).Content.ReadAsStringAsync();
        Assert.Equal([EventTypes.Cancelled], rest.Split('\n').Where(l => l.StartsWith("event: ")).Select(l => l[7..]));
    }

    [Fact]
    public async Task An_image_dataset_is_ready_but_refused_for_a_text_only_model()
    {
        // (A data: URI: an https URL would be fetched during validation, and tests have no network.)
        await using var t = await TestServer.StartAsync();
        const string line = """{"messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}]},{"role":"assistant","content":"A cat."}]}""";
        var file = await t.UploadReadyAsync(Encoding.UTF8.GetBytes(line + "\n"));
        Assert.Equal(FileStatus.Ready, file.Status);
        var problem = await TestServer.ProblemAsync(await t.Http.PostAsync("learning/jobs", TestServer.Json(TestServer.JobBody(file.Id))), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("contains images", problem["detail"]!.GetValue<string>());
    }
}
