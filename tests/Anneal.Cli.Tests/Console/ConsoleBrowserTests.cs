// The web console in a real headless browser against a real server: sign in, watch a running
// job's loss curve grow as the tiny model trains and cancel it, read a failed dataset's
// line-numbered errors, and see nothing of another organisation. In the trainer collection, so a
// trainer never shares the two cores with another test's.
using System.Text.RegularExpressions;
using Anneal.Server.Auth;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace Anneal.Cli.Tests.Console;

[Collection("trainer")]
public class ConsoleBrowserTests(ConsoleBrowser browser) : IClassFixture<ConsoleBrowser>
{
    static string LongToml(int steps, int? saveSteps) => $"""
        [job]
        model = "{Samples.TinyModel}"
        data = "data.jsonl"

        [hyperparameters]
        total_steps = {steps}
        per_device_batch = 1
        learning_rate = 1e-3
        sequence_length = 32
        {(saveSteps is { } s ? $"save_steps = {s}" : "")}
        """;

    static async Task<string> SubmitAsync(TestServer server, CliSandbox box, int steps, int? saveSteps = null)
    {
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("train.toml", LongToml(steps, saveSteps));
        box.Write("data.jsonl", Samples.Dataset(8));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "train.toml", "--no-poll");
        Assert.True(result.ExitCode == 0, result.ToString());
        return Regex.Match(result.Out, @"job_id: (\S+)").Groups[1].Value;
    }

    static Task<int> LossPointsAsync(IPage page) =>
        page.EvalOnSelectorAsync<int>("[data-chart=Loss] .legend [data-series='train.loss']", "e => Number(e.dataset.count)");

    [Fact]
    public async Task A_signed_in_user_watches_a_running_jobs_loss_curve_grow_and_cancels_the_job()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = new CliSandbox();
        var id = await SubmitAsync(server, box, steps: 3000, saveSteps: 4);

        var page = await browser.OpenAsync(server.BaseUrl);
        await ConsoleBrowser.SignInAsync(page, server.ApiKey);
        var row = page.Locator($"#jobs tr[data-job='{id}']");
        await Expect(row).ToBeVisibleAsync();
        await Expect(row.Locator("td").Nth(2)).ToHaveTextAsync(Samples.TinyModel);

        await row.Locator("a").ClickAsync();
        await Expect(page.Locator("h1 .badge")).ToHaveTextAsync("running", new() { Timeout = 90_000 });
        // The curve grows without a reload: points arrive while the page stays open.
        await page.WaitForFunctionAsync("() => Number(document.querySelector(\"[data-chart=Loss] [data-series='train.loss']\")?.dataset.count) >= 3",
            null, new() { Timeout = 90_000 });
        var before = await LossPointsAsync(page);
        await page.WaitForFunctionAsync($"() => Number(document.querySelector(\"[data-chart=Loss] [data-series='train.loss']\")?.dataset.count) >= {before + 5}",
            null, new() { Timeout = 60_000 });
        Assert.True(await page.Locator("[data-chart=Loss] path[data-series='train.loss']").CountAsync() == 1);
        await Expect(page.Locator("#events [data-type='sft.progress']").First).ToBeVisibleAsync();
        await Expect(page.Locator("#events [data-type='sft.running']")).ToHaveCountAsync(1);
        await Expect(page.Locator("#prepared mark").First).ToBeVisibleAsync();
        await Expect(page.Locator("#summary")).ToContainTextAsync("Tokens/s");
        await Expect(page.Locator("#stream-state")).ToHaveTextAsync("(live)");
        await ConsoleBrowser.ScreenshotAsync(page, "job-page-running");

        // Load while the page watches a running job: the open event stream, and at most a job read
        // and an incremental metrics read every 2 s — what `anneal train`'s follower sends at its
        // default interval (a job read and an events read every 2 s).
        var requests = new List<string>();
        void Record(object? _, IRequest r) { if (r.Url.Contains("/api/", StringComparison.Ordinal)) lock (requests) requests.Add(r.Url); }
        page.Request += Record;
        await Task.Delay(TimeSpan.FromSeconds(6));
        page.Request -= Record;
        string[] seen;
        lock (requests) seen = [.. requests];
        await File.WriteAllLinesAsync(Path.Combine(ConsoleBrowser.ScreenshotDir, "job-page-requests-6s.txt"), seen);
        // A checkpoint list read joins a cycle only after an sft.checkpoint.saved event (this job
        // saves often), so it is bounded by the cycles, not counted against the follower's rate.
        var checkpointReads = seen.Count(u => u.EndsWith("/checkpoints", StringComparison.Ordinal));
        var reads = seen.Length - checkpointReads;
        Assert.True(reads is >= 2 and <= 8, $"{reads} job/metrics reads in 6 s: {string.Join(", ", seen)}");
        Assert.True(checkpointReads <= (reads + 1) / 2, $"{checkpointReads} checkpoint reads for {reads} job/metrics reads: {string.Join(", ", seen)}");
        Assert.All(seen.Where(u => u.Contains("/metrics", StringComparison.Ordinal)), u => Assert.Contains("after_step=", u));
        Assert.DoesNotContain(seen, u => u.Contains("/events", StringComparison.Ordinal));   // the stream stays open

        // Pause once a checkpoint is listed, then resume: the page follows both without a reload.
        await Expect(page.Locator("#checkpoints tbody tr").First).ToBeVisibleAsync(new() { Timeout = 60_000 });
        await page.ClickAsync("#pause-job");
        await Expect(page.Locator("h1 .badge")).ToHaveTextAsync("paused", new() { Timeout = 60_000 });
        await Expect(page.Locator("#resume-job")).ToBeEnabledAsync();
        await page.ClickAsync("#resume-job");
        await Expect(page.Locator("h1 .badge")).ToHaveTextAsync(new Regex("queued|running"));
        await Expect(page.Locator("#events [data-type='sft.resumed']")).ToHaveCountAsync(1);
        await Expect(page.Locator("h1 .badge")).ToHaveTextAsync("running", new() { Timeout = 90_000 });

        // Cancel asks for a second click, then the page shows the job cancelled without a reload.
        await page.ClickAsync("#cancel-job");
        await Expect(page.Locator("#cancel-job")).ToHaveTextAsync("Really cancel?");
        await page.ClickAsync("#cancel-job");
        await Expect(page.Locator("h1 .badge")).ToHaveTextAsync("cancelled", new() { Timeout = 60_000 });
        await Expect(page.Locator("#events [data-type='sft.cancelled']")).ToHaveCountAsync(1);
        await Expect(page.Locator("#stream-state")).ToHaveTextAsync("(finished)");
        await Expect(page.Locator("#cancel-job")).ToBeDisabledAsync();
        await page.ClickAsync("#show-log");
        await Expect(page.Locator("#log")).ToBeVisibleAsync();
        await ConsoleBrowser.ScreenshotAsync(page, "job-page-cancelled");

        using var client = server.Client();
        Assert.Equal("cancelled", (await client.GetJobAsync(id, default)).Status);

        // The same curve at the terminal.
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        var plot = await box.RunAsync("jobs", "get", id, "--plot");
        Assert.True(plot.ExitCode == 0, plot.ToString());
        var points = (await client.GetMetricsAsync(id, null, "train.loss", default)).Points.Count;
        Assert.Contains($"* train.loss ({points} points, last ", plot.Out);
        // Axis rows carry the points (where the first one lands depends on how far training got).
        var rows = plot.Out.Split('\n').Where(l => l.Contains('┤') || l.Contains('│')).ToList();
        Assert.True(rows.Count >= 3, plot.Out);
        Assert.Contains(rows, l => l.Contains('*'));

        // The training file's page renders the example as this job prepared it.
        await page.ClickAsync("#summary a[href^='#/datasets/']");
        await Expect(page.Locator("#prepared")).ToContainTextAsync($"As prepared by job {id}");
        await Expect(page.Locator("#prepared mark").First).ToBeVisibleAsync();

        // The status filter narrows the list.
        await page.GotoAsync("/#/jobs?status=running");
        await Expect(page.Locator("#jobs")).ToContainTextAsync("No running jobs.");
        await page.SelectOptionAsync("#status-filter", "cancelled");
        await Expect(page.Locator($"#jobs tr[data-job='{id}']")).ToBeVisibleAsync();
    }

    [Fact]
    public async Task A_finished_jobs_fine_tuned_model_can_be_copied_found_on_the_models_page_deployed_and_chatted_with()
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = new CliSandbox();
        var id = await SubmitAsync(server, box, steps: 2);
        using var client = server.Client();
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while ((await client.GetJobAsync(id, default)).Status is not "succeeded" and not "failed" && DateTime.UtcNow < deadline) await Task.Delay(300);
        var job = await client.GetJobAsync(id, default);
        Assert.Equal("succeeded", job.Status);

        var page = await browser.OpenAsync(server.BaseUrl);
        await ConsoleBrowser.SignInAsync(page, server.ApiKey);
        await page.GotoAsync($"/#/jobs/{id}");
        await Expect(page.Locator("#fine-tuned-model")).ToHaveTextAsync(job.FineTunedModel!);
        var copy = page.Locator($"#summary button[data-copy='{job.FineTunedModel}']");
        await copy.ClickAsync();
        await Expect(copy).ToHaveTextAsync("Copied");
        await Expect(page.Locator("#chat-link")).ToHaveAttributeAsync("href", $"#/chat/{Uri.EscapeDataString(job.FineTunedModel!)}");
        await Expect(page.Locator("#stream-state")).ToHaveTextAsync("(finished)");
        await Expect(page.Locator("#events [data-type='sft.completed']")).ToHaveCountAsync(1);
        await Expect(page.Locator("[data-chart=Loss] .legend [data-series='train.loss']")).ToHaveAttributeAsync("data-count", "2");
        await ConsoleBrowser.ScreenshotAsync(page, "job-page-succeeded");

        await page.ClickAsync("nav a[data-page=models]");
        await Expect(page.Locator("#fine-tuned-models")).ToContainTextAsync(job.FineTunedModel!);
        await Expect(page.Locator($"#fine-tuned-models a[href='#/jobs/{id}']")).ToBeVisibleAsync();

        // Deploy the fine-tuned model into the inference process and chat with it over /v1.
        await page.ClickAsync($"#fine-tuned-models a[data-chat='{job.FineTunedModel}']");
        await page.ClickAsync("#deploy");
        await Expect(page.Locator("#deployment .badge")).ToHaveTextAsync("ready", new() { Timeout = 120_000 });
        await Expect(page.Locator("#deployment code")).ToHaveTextAsync($"{server.BaseUrl}/v1");
        await page.FillAsync("#max-tokens", "8");
        await page.FillAsync("#chat-input", "What is 0 plus 1?");
        await page.ClickAsync("#chat-send");
        await Expect(page.Locator("#chat-log .msg.user")).ToHaveTextAsync("What is 0 plus 1?");
        var reply = page.Locator("#chat-log .msg.assistant:not(.pending)");
        await Expect(reply).ToHaveCountAsync(1, new() { Timeout = 120_000 });
        Assert.NotEqual("", (await reply.InnerTextAsync()).Trim());
        await ConsoleBrowser.ScreenshotAsync(page, "chat");
        await page.ClickAsync("#undeploy");
        await Expect(page.Locator("#deploy")).ToBeVisibleAsync();
    }

    [Fact]
    public async Task A_failed_upload_shows_its_line_numbered_errors()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        // Invalid text is refused at upload; a file fails later only when its images cannot be
        // fetched, as these (on a loopback address, which is never fetched) on lines 2 and 3.
        const string refusedImage = """{"messages":[{"role":"user","content":[{"type":"text","text":"Colour?"},{"type":"image_url","image_url":{"url":"https://127.0.0.1:9/IMAGE.png"}}]},{"role":"assistant","content":"Red."}]}""";
        var bad = box.Write("bad.jsonl", Samples.Record(0) + "\n" + refusedImage.Replace("IMAGE", "a") + "\n" + refusedImage.Replace("IMAGE", "b") + "\n");
        using var client = server.Client();
        await using (var stream = File.OpenRead(bad))
            await client.UploadFileAsync(stream, "bad.jsonl", "fine-tune", default);

        var page = await browser.OpenAsync(server.BaseUrl);
        await ConsoleBrowser.SignInAsync(page, server.ApiKey);
        await page.ClickAsync("nav a[data-page=datasets]");
        var row = page.Locator("#datasets tbody tr").First;
        await Expect(row.Locator(".badge")).ToHaveTextAsync("failed", new() { Timeout = 30_000 });
        await row.Locator("a").ClickAsync();
        var errors = page.Locator("#file-errors li");
        await Expect(errors.First).ToContainTextAsync("Line 2: ");
        Assert.Contains(await errors.AllInnerTextsAsync(), e => e.StartsWith("Line 3: ", StringComparison.Ordinal));
        await ConsoleBrowser.ScreenshotAsync(page, "dataset-failed");
    }

    [Fact]
    public async Task Another_organisations_key_sees_none_of_it_and_a_wrong_key_is_refused()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        var id = await SubmitAsync(server, box, steps: 2);
        var otherKey = await ApiKeys.CreateAsync(server.DataDir, "acme");

        var page = await browser.OpenAsync(server.BaseUrl);
        // The first load's bytes on the wire (gzip), everything the sign-in page fetches; README states it.
        var firstLoad = new List<IResponse>();
        page.Response += (_, r) => firstLoad.Add(r);
        await page.GotoAsync("/");
        await page.WaitForLoadStateAsync(LoadState.NetworkIdle);
        long bytes = 0;
        foreach (var r in firstLoad.ToList())
        {
            var sizes = await r.Request.SizesAsync();
            bytes += sizes.ResponseBodySize + sizes.ResponseHeadersSize;
        }
        Assert.Equal(11, firstLoad.Count);   // index.html, console.css and the nine modules
        Directory.CreateDirectory(ConsoleBrowser.ScreenshotDir);
        await File.WriteAllTextAsync(Path.Combine(ConsoleBrowser.ScreenshotDir, "first-load.txt"),
            $"{firstLoad.Count} responses, {bytes} bytes (bodies as sent, gzip, plus headers)\n");
        Assert.InRange(bytes, 10_000, 40 * 1024);
        await page.FillAsync("#api-key", "ank_not-a-key");
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator("#sign-in-error")).ToHaveTextAsync("That API key was not accepted.");
        Assert.Null(await page.EvaluateAsync<string?>("() => sessionStorage.getItem('anneal.apiKey')"));

        await page.FillAsync("#api-key", otherKey);
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator("#jobs")).ToContainTextAsync("No jobs yet.");
        await page.ClickAsync("nav a[data-page=datasets]");
        await Expect(page.Locator("#datasets")).ToContainTextAsync("No datasets yet.");
        await page.GotoAsync($"/#/jobs/{id}");
        await Expect(page.Locator(".notice")).ToContainTextAsync($"Not found: No job with id '{id}'.");
        await page.ClickAsync("nav a[data-page=models]");
        await Expect(page.Locator("#base-models")).ToContainTextAsync(Samples.TinyModel);

        // Charts of thousands of steps draw at most two points per horizontal pixel and keep a spike.
        var drawn = await page.EvaluateAsync<double[]>("""
            async () => {
              const { LineChart } = await import('/console/chart.js');
              const pts = Array.from({ length: 5000 }, (_, i) => ({ x: i + 1, y: 3 - i / 5000 + (i === 2345 ? 7 : 0) }));
              const chart = new LineChart('Loss', ['train.loss']);
              chart.draw(new Map([['train.loss', pts]]));
              const path = chart.el.querySelector('path');
              const ys = path.getAttribute('d').split(/[ML]/).filter(Boolean).map(p => Number(p.split(',')[1]));
              return [Number(path.dataset.count), Number(path.dataset.drawn), Math.min(...ys)];
            }
            """);
        Assert.Equal(5000, drawn[0]);
        Assert.InRange(drawn[1], 100, 2 * 238 + 2);   // 540 units wide less 64 of margins: 238 buckets
        Assert.InRange(drawn[2], 0, 40);   // the spike stays: near the top, where the rest of the line sits below y 160
        // A learning-rate axis whose ticks differ in the fourth digit still labels each one apart.
        var labels = await page.EvaluateAsync<string[]>(
            "async () => { const c = await import('/console/chart.js'); return c.tickLabels(c.ticks(0.000998, 0.001)); }");
        Assert.Equal(["9.980e-4", "9.985e-4", "9.990e-4", "9.995e-4", "1.000e-3"], labels);

        // The key lives in this tab's sessionStorage only; signing out forgets it.
        await page.ClickAsync("#sign-out");
        await Expect(page.Locator("#api-key")).ToBeVisibleAsync();
        Assert.Null(await page.EvaluateAsync<string?>("() => sessionStorage.getItem('anneal.apiKey')"));
    }
}
