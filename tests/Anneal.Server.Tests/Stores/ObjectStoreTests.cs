// The object store (`anneal serve --object-store s3://bucket/prefix`) against a real S3-compatible
// server (TestS3: s3rver): an acknowledged upload is in the bucket with its bytes (also when it
// goes up in parts), a server whose data folder lacks the file fetches it and trains on it, a
// damaged object is refused by name and never used, DELETE removes the object, and bad
// --object-store values stop the start with a reason.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Anneal.Core.Contracts;
using Anneal.Server.Hosting;
using Anneal.Server.Storage;
using Anneal.Server.Workers;

namespace Anneal.Server.Tests.Stores;

public class ObjectStoreTests
{
    /// <summary>Copies the training file it was given to $JOBDIR/seen.jsonl, then succeeds.</summary>
    const string CopiesTrainingFile = """
        set -u
        SPEC="$4"
        JOBDIR="$(dirname "$SPEC")"
        OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$SPEC")"
        TRAIN="$(sed -n 's/.*"training_file": *"\([^"]*\)".*/\1/p' "$SPEC")"
        cp "$TRAIN" "$JOBDIR/seen.jsonl"
        mkdir -p "$OUT/final"
        printf '{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"%s","final_path":"%s/final"}}\n' "$OUT" "$OUT"
        exit 0
        """;

    /// <summary>A full fine-tune's outputs as the trainer writes them: checkpoint step-1, then final/ (a Hugging Face folder in a subfolder too).</summary>
    const string WritesOutputs = """
        set -u
        SPEC="$4"
        OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$SPEC")"
        mkdir -p "$OUT/checkpoints/step-1"
        echo '{"step":1}' > "$OUT/checkpoints/step-1/trainer_state.json"
        echo moments > "$OUT/checkpoints/step-1/optimizer.bin"
        printf '{"type":"sft.checkpoint.saved","level":"info","message":"saved","data":{"step":1,"path":"%s/checkpoints/step-1"}}\n' "$OUT"
        mkdir -p "$OUT/final/extra"
        echo '{"model_type":"qwen3"}' > "$OUT/final/config.json"
        echo weights > "$OUT/final/model.safetensors"
        echo nested > "$OUT/final/extra/notes.txt"
        printf '{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"%s","final_path":"%s/final"}}\n' "$OUT" "$OUT"
        exit 0
        """;

    static async Task<Dictionary<string, string>> ExportAsync(TestServer server, string model, string format)
    {
        var response = await server.Http.GetAsync($"learning/model-export?model={Uri.EscapeDataString(model)}&format={format}");
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        var files = new Dictionary<string, string>();
        using var tar = new System.Formats.Tar.TarReader(await response.Content.ReadAsStreamAsync());
        while (await tar.GetNextEntryAsync() is { } entry)
            files[entry.Name] = new StreamReader(entry.DataStream!).ReadToEnd();
        return files;
    }

    static string? StoredPath(TestServer server, string sql, string id)
    {
        using var db = new Db(server.DataDir, server.Options.Database);
        using var conn = db.Connect();
        return Db.Scalar<string>(conn, null, sql, ("@id", id));
    }

    /// <summary>Succeeds after noting the checkpoint it was told to resume from: its trainer_state.json, and whether optimizer.bin came with it.</summary>
    const string NotesResume = """
        set -u
        SPEC="$4"
        JOBDIR="$(dirname "$SPEC")"
        OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$SPEC")"
        RESUME="$(sed -n 's/.*"resume_from": *"\([^"]*\)".*/\1/p' "$SPEC")"
        cp "$RESUME/trainer_state.json" "$JOBDIR/resumed-state.json"
        [ -f "$RESUME/optimizer.bin" ] && touch "$JOBDIR/resumed-with-optimizer"
        mkdir -p "$OUT/final"
        printf '{"type":"sft.completed","level":"info","message":"done","data":{"output_dir":"%s","final_path":"%s/final"}}\n' "$OUT" "$OUT"
        exit 0
        """;

    static string Sha(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    static Task<TestServer> Start(ObjectStoreSettings store, Func<ServerOptions, ServerOptions>? more = null, string? dataDir = null) =>
        TestServer.StartAsync(o => (more ?? (x => x))(o with { ObjectStore = store }), dataDir);

    static void WipeCache(TestServer server)
    {
        var files = Path.Combine(server.DataDir, "files");
        Directory.Delete(files, recursive: true);
        Directory.CreateDirectory(files);
    }

    [S3Fact]
    public async Task An_acknowledged_upload_is_in_the_bucket_with_its_bytes_and_sha256()
    {
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store);
        var bytes = TestServer.Dataset(5);
        var file = await server.UploadReadyAsync(bytes);
        Assert.Equal(Sha(bytes), file.Sha256);
        Assert.Equal(bytes, await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}"));
        var (bucket, prefix, _) = ObjectStoreSettings.Parse(store.Url);
        var head = await TestS3.Shared.Client.GetObjectMetadataAsync(bucket, $"{prefix}/files/{file.Sha256}");
        Assert.Equal(file.Sha256, head.Metadata["sha256"]);
    }

    [S3Fact]
    public async Task A_large_upload_goes_up_in_parts_and_arrives_whole()
    {
        var store = TestS3.Shared.NewBucket() with { MultipartThreshold = 6L * 1024 * 1024, PartSize = 5L * 1024 * 1024 };
        await using var server = await Start(store);
        // ~12 MiB: three parts of 5, 5 and ~2 MiB.
        var line = Encoding.UTF8.GetBytes(TestServer.GoodLine.Replace("2+2", new string('7', 900)) + "\n");
        var bytes = Enumerable.Repeat(line, 12 * 1024 * 1024 / line.Length).SelectMany(l => l).ToArray();
        var file = await server.UploadReadyAsync(bytes);
        var stored = await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}");
        Assert.NotNull(stored);
        Assert.Equal(bytes.Length, stored.Length);
        Assert.Equal(Sha(bytes), Sha(stored));
    }

    [S3Fact]
    public async Task A_server_whose_data_folder_lacks_the_file_fetches_it_from_the_bucket_and_trains_on_it()
    {
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store, o => o with { TrainerCommand = ScriptTrainer.Write(CopiesTrainingFile) });
        var bytes = TestServer.Dataset(4);
        var file = await server.UploadReadyAsync(bytes);
        await server.RestartAsync();
        WipeCache(server);

        var job = await server.CreateJobAsync(file.Id);
        await server.StartJobAsync(job.Id);
        var done = await server.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.True(done.Status == JobStatus.Succeeded, done.Error?.Message);
        Assert.Equal(bytes, await File.ReadAllBytesAsync(Path.Combine(server.DataDir, "jobs", job.Id, "seen.jsonl")));
        Assert.True(File.Exists(Path.Combine(server.DataDir, "files", file.Sha256)));
    }

    [S3Fact]
    public async Task A_damaged_object_is_refused_by_name_and_the_job_fails_without_using_it()
    {
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store, o => o with { TrainerCommand = ScriptTrainer.Write(CopiesTrainingFile) });
        var file = await server.UploadReadyAsync(TestServer.Dataset(3));
        WipeCache(server);
        await TestS3.Shared.DamageAsync(store, $"files/{file.Sha256}", TestServer.Dataset(2));

        var job = await server.CreateJobAsync(file.Id);
        await server.StartJobAsync(job.Id);
        var failed = await server.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.Equal(JobStatus.Failed, failed.Status);
        Assert.Equal(ErrorCodes.ObjectStore, failed.Error!.Code);
        Assert.Contains($"'files/{file.Sha256}' is damaged", failed.Error.Message);
        Assert.Contains($"expected {file.Sha256}", failed.Error.Message);
        Assert.False(File.Exists(Path.Combine(server.DataDir, "files", file.Sha256)));
        Assert.False(File.Exists(Path.Combine(server.DataDir, "jobs", job.Id, "seen.jsonl")));
    }

    [S3Fact]
    public async Task A_worker_downloads_a_file_this_server_fetches_from_the_bucket_first_and_never_a_damaged_one()
    {
        const string token = "worker-token-0123456789";
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store, o => o with { WorkerToken = token });
        var bytes = TestServer.Dataset(3);
        var file = await server.UploadReadyAsync(bytes);
        WipeCache(server);
        using var worker = new HttpClient { BaseAddress = new Uri(server.Server.BaseUrl + "/") };
        worker.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);

        var response = await worker.GetAsync($"api/workers/files/{file.Id}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(file.Sha256, response.Headers.GetValues(WorkerProtocol.Sha256Header).Single());
        Assert.Equal(bytes, await response.Content.ReadAsByteArrayAsync());

        WipeCache(server);
        await TestS3.Shared.DamageAsync(store, $"files/{file.Sha256}", TestServer.Dataset(1));
        var problem = await TestServer.ProblemAsync(await worker.GetAsync($"api/workers/files/{file.Id}"), HttpStatusCode.BadGateway);
        Assert.Equal(ErrorCodes.ObjectStore, problem["code"]!.GetValue<string>());
        Assert.Contains("is damaged", problem["detail"]!.GetValue<string>());
    }

    [S3Fact]
    public async Task Delete_removes_the_object_with_the_last_file_that_uses_it()
    {
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store);
        var file = await server.UploadReadyAsync();
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}"));
        var deleted = await server.Http.DeleteAsync($"learning/files/{file.Id}");
        Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        Assert.Null(await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}"));
        Assert.False(File.Exists(Path.Combine(server.DataDir, "files", file.Sha256)));
        // The server still works on the bucket afterwards: the same bytes again are stored again.
        var again = await server.UploadReadyAsync();
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"files/{again.Sha256}"));
    }

    [S3Fact]
    public async Task Checkpoints_and_the_final_model_go_into_the_bucket_and_a_server_that_lacks_them_exports_them()
    {
        var store = TestS3.Shared.NewBucket();
        await using var server = await Start(store, o => o with { TrainerCommand = ScriptTrainer.Write(WritesOutputs) });
        var file = await server.UploadReadyAsync();
        var job = await server.CreateJobAsync(file.Id);
        await server.StartJobAsync(job.Id);
        var done = await server.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.True(done.Status == JobStatus.Succeeded, done.Error?.Message);
        var model = done.FineTunedModel!;

        // Rows name the folders by their key (relative to the data folder), the same on every server.
        var output = $"jobs/{job.Id}/output";
        Assert.Equal($"{output}/final", StoredPath(server, "SELECT path FROM fine_tuned_models WHERE id = @id", model));
        Assert.Equal($"{output}/checkpoints/step-1", StoredPath(server, "SELECT path FROM checkpoints WHERE job_id = @id", job.Id));
        Assert.Equal("nested\n", Encoding.UTF8.GetString((await TestS3.Shared.GetAsync(store, $"{output}/final/extra/notes.txt"))!));
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"{output}/final{ObjectFiles.ManifestSuffix}"));
        Assert.Equal("moments\n", Encoding.UTF8.GetString((await TestS3.Shared.GetAsync(store, $"{output}/checkpoints/step-1/optimizer.bin"))!));
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"{output}/checkpoints/step-1{ObjectFiles.ManifestSuffix}"));

        // The job's folder is gone from this server: the model comes back from the bucket, whole.
        await server.RestartAsync();
        Directory.Delete(Path.Combine(server.DataDir, "jobs", job.Id), recursive: true);
        var exported = await ExportAsync(server, model, "merged");
        Assert.Equal("weights\n", exported["model.safetensors"]);
        Assert.Equal("{\"model_type\":\"qwen3\"}\n", exported["config.json"]);
        Assert.Equal("nested\n", File.ReadAllText(Path.Combine(server.DataDir, "jobs", job.Id, "output", "final", "extra", "notes.txt")));

        // A damaged copy in the bucket is refused by name, never exported.
        Directory.Delete(Path.Combine(server.DataDir, "jobs", job.Id), recursive: true);
        await TestS3.Shared.DamageAsync(store, $"{output}/final/model.safetensors", Encoding.UTF8.GetBytes("tampered"));
        var problem = await TestServer.ProblemAsync(
            await server.Http.GetAsync($"learning/model-export?model={Uri.EscapeDataString(model)}&format=merged"), HttpStatusCode.NotFound);
        Assert.Contains($"'{output}/final/model.safetensors' is damaged", problem["detail"]!.GetValue<string>());
        Assert.False(Directory.Exists(Path.Combine(server.DataDir, "jobs", job.Id, "output", "final")));
    }

    [S3Fact]
    public async Task A_data_folder_first_started_with_a_bucket_copies_what_it_holds_into_it()
    {
        // Files and a model made with the data folder as the store (rows of an earlier version name folders by absolute path).
        await using var server = await TestServer.StartAsync(o => o with { TrainerCommand = ScriptTrainer.Write(WritesOutputs) });
        var bytes = TestServer.Dataset(7);
        var file = await server.UploadReadyAsync(bytes);
        var job = await server.CreateJobAsync(file.Id);
        await server.StartJobAsync(job.Id);
        var done = await server.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.True(done.Status == JobStatus.Succeeded, done.Error?.Message);
        var final = Path.Combine(server.DataDir, "jobs", job.Id, "output", "final");
        server.Sql($"UPDATE fine_tuned_models SET path = '{final}'");

        var store = TestS3.Shared.NewBucket();
        await server.RestartAsync(o => o with { ObjectStore = store });
        Assert.Equal(bytes, await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}"));
        var output = $"jobs/{job.Id}/output";
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"{output}/final{ObjectFiles.ManifestSuffix}"));
        Assert.NotNull(await TestS3.Shared.GetAsync(store, $"{output}/checkpoints/step-1{ObjectFiles.ManifestSuffix}"));
        Assert.Equal($"{output}/final", StoredPath(server, "SELECT path FROM fine_tuned_models WHERE id = @id", done.FineTunedModel!));
        Assert.Equal(store.Url, File.ReadAllText(Path.Combine(server.DataDir, "object-store.url")).Trim());

        // From the bucket alone: a folder that lost everything still trains on the file and exports the model.
        Directory.Delete(Path.Combine(server.DataDir, "jobs"), recursive: true);
        WipeCache(server);
        Assert.Equal("weights\n", (await ExportAsync(server, done.FineTunedModel!, "merged"))["model.safetensors"]);
    }

    [Theory]
    [InlineData("/srv/anneal", "expected s3://bucket or s3://bucket/prefix")]
    [InlineData("s3://", "bucket '' is not an S3 bucket name")]
    [InlineData("s3://My_Bucket/x", "bucket 'My_Bucket' is not an S3 bucket name")]
    [InlineData("s3://bucket/a/../b", "prefix 'a/../b' has an empty, '.' or '..' part")]
    [InlineData("https://bucket.s3.amazonaws.com/x", "expected s3://bucket or s3://bucket/prefix")]
    public void Bad_object_store_urls_are_refused_naming_the_flag_and_what_was_expected(string url, string why)
    {
        var problem = new ObjectStoreSettings { Url = url }.Problem();
        Assert.NotNull(problem);
        Assert.StartsWith("--object-store '", problem);
        Assert.Contains(why, problem);
    }

    [Fact]
    public void Bad_endpoints_and_half_given_keys_are_refused_by_name()
    {
        Assert.Contains("--s3-endpoint 'minio:9000'", new ObjectStoreSettings { Url = "s3://bucket", Endpoint = "minio:9000" }.Problem());
        Assert.Contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together", new ObjectStoreSettings { Url = "s3://bucket", AccessKeyId = "k" }.Problem());
        Assert.Null(new ObjectStoreSettings { Url = "s3://bucket/some/prefix", Endpoint = "http://127.0.0.1:9000" }.Problem());
    }

    [S3Fact]
    public async Task A_missing_bucket_stops_the_start_with_the_stores_answer_and_releases_the_data_folder()
    {
        var missing = TestS3.Shared.Settings("s3://no-such-bucket-here/anneal");
        var dir = Path.Combine(Path.GetTempPath(), "anneal-server-tests", Guid.NewGuid().ToString("n"));
        var options = new ServerOptions { Urls = "http://127.0.0.1:0", DataDir = dir, Database = TestStore.NewDatabase(), ObjectStore = missing };
        var e = await Assert.ThrowsAsync<ServerStartException>(() => ServerHost.StartAsync(options));
        Assert.Contains("--object-store s3://no-such-bucket-here/anneal: cannot use the bucket", e.Message);
        Assert.Contains("NoSuchBucket", e.Message);
        // Nothing holds the folder: a start with a good bucket works.
        await using var server = await Start(TestS3.Shared.NewBucket(), dataDir: dir);
    }

    [PostgresFact]
    public async Task A_job_paused_on_one_server_resumes_on_another_from_the_checkpoint_in_the_bucket()
    {
        if (!TestS3.NodeAvailable) return;
        var store = TestS3.Shared.NewBucket();
        var a = await Start(store, o => o with { TrainerCommand = ScriptTrainer.Write(ScriptTrainer.CheckpointThenWaits) });
        var file = await a.UploadReadyAsync();
        var job = await a.CreateJobAsync(file.Id);
        await a.StartJobAsync(job.Id);
        for (var i = 0; i < 200 && (await a.EventsAsync(job.Id)).All(e => e.Type != EventTypes.CheckpointSaved); i++) await Task.Delay(50);
        var paused = await a.Http.PostAsync($"learning/jobs/{job.Id}/pause", null);
        Assert.True(paused.IsSuccessStatusCode, await paused.Content.ReadAsStringAsync());
        Assert.Equal(JobStatus.Paused, (await a.GetJobAsync(job.Id)).Status);
        var (database, key) = (a.Options.Database, a.ApiKey);
        await a.DisposeAsync();   // its data folder is gone with it

        await using var b = await Start(store, o => o with { TrainerCommand = ScriptTrainer.Write(NotesResume), Database = database });
        using var bHttp = b.Client(key);
        var resumed = await bHttp.PostAsync($"learning/jobs/{job.Id}/resume", null);
        Assert.True(resumed.IsSuccessStatusCode, await resumed.Content.ReadAsStringAsync());
        JobObject done;
        for (var i = 0; ; i++)
        {
            done = (await bHttp.GetFromJsonAsync<JobObject>($"learning/jobs/{job.Id}", AnnealJson.Options))!;
            if (JobStatus.IsTerminal(done.Status) || i > 600) break;
            await Task.Delay(50);
        }
        Assert.True(done.Status == JobStatus.Succeeded, done.Error?.Message ?? done.Status);
        var jobDir = Path.Combine(b.DataDir, "jobs", job.Id);
        Assert.Equal("{\"step\":3}\n", await File.ReadAllTextAsync(Path.Combine(jobDir, "resumed-state.json")));
        Assert.True(File.Exists(Path.Combine(jobDir, "resumed-with-optimizer")));
    }

    [PostgresFact]
    public async Task Two_servers_with_their_own_data_folders_share_files_through_the_bucket()
    {
        if (!TestS3.NodeAvailable) return;
        var store = TestS3.Shared.NewBucket();
        var trainer = ScriptTrainer.Write(CopiesTrainingFile);
        await using var a = await Start(store, o => o with { TrainerCommand = [] , MaxConcurrentJobs = 0 });
        await using var b = await Start(store, o => o with { TrainerCommand = trainer, Database = a.Options.Database });
        Assert.NotEqual(a.DataDir, b.DataDir);
        var bytes = TestServer.Dataset(6);
        var file = await a.UploadReadyAsync(bytes);
        var job = await a.CreateJobAsync(file.Id);
        await a.StartJobAsync(job.Id);
        var done = await a.WaitJobAsync(job.Id, j => JobStatus.IsTerminal(j.Status));
        Assert.True(done.Status == JobStatus.Succeeded, done.Error?.Message);
        Assert.Equal(bytes, await File.ReadAllBytesAsync(Path.Combine(b.DataDir, "jobs", job.Id, "seen.jsonl")));
        // Deleted through B, the bytes leave the bucket; A's cached copy is only a cache.
        using var bHttp = b.Client(a.ApiKey);
        Assert.Equal(HttpStatusCode.OK, (await bHttp.DeleteAsync($"learning/files/{file.Id}")).StatusCode);
        Assert.Null(await TestS3.Shared.GetAsync(store, $"files/{file.Sha256}"));
    }
}
