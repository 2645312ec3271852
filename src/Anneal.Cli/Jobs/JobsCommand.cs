// `anneal jobs list|get|events|cancel`: the job endpoints of DESIGN.md §3.
using System.CommandLine;
using System.Globalization;
using Anneal.Cli.Http;
using Anneal.Cli.Train;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Jobs;

public static class JobsCommand
{
    public static Command Create(CliContext ctx, SharedOptions shared)
    {
        var jobId = new Argument<string>("job-id") { Description = "The job's id (printed by `anneal train`)" };

        var status = new Option<string?>("--status") { Description = "Only jobs in this status" };
        status.AcceptOnlyFromAmong(JobStatus.Created, JobStatus.Queued, JobStatus.Running, JobStatus.Paused, JobStatus.Succeeded, JobStatus.Failed, JobStatus.Cancelled);
        var limit = new Option<int>("--limit") { Description = "At most this many jobs, newest first", DefaultValueFactory = _ => 20 };
        var list = new Command("list", "List your organisation's jobs, newest first") { status, limit };
        list.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var jobs = await client.ListJobsAsync(p.GetValue(status), p.GetValue(limit), ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(jobs);
            else if (jobs.Jobs.Count == 0) ctx.Out.WriteLine("No jobs.");
            else
            {
                Tables.Write(ctx, ["id", "status", "model", "progress", "created", "fine_tuned_model"], jobs.Jobs.Select(j => (IReadOnlyList<string>)
                [
                    j.Id, j.Status, j.Model,
                    j.Progress is { TotalSteps: > 0 } pr ? $"{pr.Step}/{pr.TotalSteps}" : "",
                    j.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture),
                    j.FineTunedModel ?? "",
                ]));
                if (jobs.HasMore) ctx.Out.WriteLine($"(more jobs: raise --limit)");
            }
            return ExitCodes.Ok;
        });

        var plot = new Option<bool>("--plot") { Description = "Also draw the loss curve (training and validation) in the terminal" };
        var get = new Command("get", "Show a job: status, progress, fine_tuned_model or error") { jobId, plot };
        get.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var job = await client.GetJobAsync(p.GetValue(jobId)!, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(job);
            else
            {
                ctx.Out.WriteLine($"model: {job.Model}");
                TrainFlow.Report(ctx, job, json: false, submitted: true);
                ctx.Out.WriteLine($"console: {ConsoleLink.ForJob(client.BaseUrl, job.Id)}");
            }
            if (p.GetValue(plot))
            {
                var points = (await client.GetMetricsAsync(job.Id, null, null, ct)).Points;
                IReadOnlyList<(long, double)> Series(string name) => points.Where(m => m.Name == name).Select(m => (m.Step, m.Value)).ToList();
                var width = ctx.IsTerminal ? Math.Clamp(ctx.Console.Profile.Width, 40, 160) : 80;
                // With --json the plot goes to stderr, so stdout stays one JSON document.
                var writer = p.GetValue(shared.Json) ? ctx.Error : ctx.Out;
                foreach (var line in LossPlot.Render(Series(MetricNames.TrainLoss), Series(MetricNames.ValLoss), width)) writer.WriteLine(line);
            }
            return ExitCodes.Ok;
        });

        var since = new Option<long>("--since-seq") { Description = "Only events after this sequence number", DefaultValueFactory = _ => 0 };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new events until the job ends" };
        var interval = new Option<double>("--poll-interval") { Description = "Seconds between checks with --follow", DefaultValueFactory = _ => 2 };
        var events = new Command("events", "Print a job's events (progress, checkpoints, errors)") { jobId, since, follow, interval };
        events.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var id = p.GetValue(jobId)!;
            if (p.GetValue(follow))
            {
                var result = await new JobFollower(ctx, client, TimeSpan.FromSeconds(Math.Max(0.1, p.GetValue(interval))), null).FollowAsync(id, ct);
                return TrainFlow.Report(ctx, result.Job!, json: false, submitted: false).ExitCode;
            }
            var page = await client.GetEventsAsync(id, p.GetValue(since), 1000, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(page);
            else foreach (var e in page.Events) ctx.Out.WriteLine($"{e.Seq,5} {JobFollower.FormatPlain(e)}");
            return ExitCodes.Ok;
        });

        var cancel = new Command("cancel", "Cancel a queued or running job (a running trainer stops within one optimizer step)") { jobId };
        cancel.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var job = await client.CancelJobAsync(p.GetValue(jobId)!, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(job);
            else ctx.Out.WriteLine($"Job {job.Id}: {job.Status}");
            return ExitCodes.Ok;
        });

        var pause = new Command("pause", "Pause a running job at its latest checkpoint and free its device") { jobId };
        pause.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var job = await client.PauseJobAsync(p.GetValue(jobId)!, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(job);
            else ctx.Out.WriteLine($"Job {job.Id}: {job.Status}");
            return ExitCodes.Ok;
        });

        var resume = new Command("resume", "Queue a paused job again; it continues from its checkpoint") { jobId };
        resume.SetApiAction(ctx, shared, json: true, async (p, client, ct) =>
        {
            var job = await client.ResumeJobAsync(p.GetValue(jobId)!, ct);
            if (p.GetValue(shared.Json)) ctx.WriteJson(job);
            else ctx.Out.WriteLine($"Job {job.Id}: {job.Status}");
            return ExitCodes.Ok;
        });

        return new Command("jobs", "List, inspect, cancel, pause and resume fine-tuning jobs") { list, get, events, cancel, pause, resume };
    }
}
