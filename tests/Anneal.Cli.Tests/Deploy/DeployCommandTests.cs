// Bad input to the deploy-related commands: each is refused with a message naming what is wrong,
// before anything is started or downloaded.
namespace Anneal.Cli.Tests.Deploy;

public class DeployCommandTests
{
    [Fact]
    public async Task Inference_run_needs_a_model_folder()
    {
        using var box = new CliSandbox();
        var none = await box.RunAsync("inference", "run");
        Assert.Equal(2, none.ExitCode);
        Assert.Contains("give at least one --model", none.Err);
        var missing = await box.RunAsync("inference", "run", "--model", "m=does-not-exist");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("does-not-exist does not exist", missing.Err);
        box.Write("empty/readme.txt", "not a model");
        var notModel = await box.RunAsync("inference", "run", "--model", "m=empty");
        Assert.Equal(2, notModel.ExitCode);
        Assert.Contains("holds neither config.json", notModel.Err);
        var batch = await box.RunAsync("inference", "run", "--model", "m=empty", "--max-batch", "0");
        Assert.Equal(2, batch.ExitCode);
        Assert.Contains("--max-batch 0", batch.Err);
    }

    [Fact]
    public async Task Serve_refuses_an_inference_gpu_that_is_not_a_gpu_index()
    {
        using var box = new CliSandbox();
        var r = await box.RunAsync("serve", "--data-dir", "data", "--gpus", "0,1", "--inference-gpu", "x");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--inference-gpu: 'x' is not a GPU index", r.Err);
    }

    [Fact]
    public async Task Deploy_without_a_model_or_of_an_unknown_model_fails_with_the_reason()
    {
        await using var server = await TestServer.StartAsync();
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        var none = await box.RunAsync("deploy");
        Assert.Equal(2, none.ExitCode);
        Assert.Contains("give the model to deploy", none.Err);
        var unknown = await box.RunAsync("deploy", "ft:anneal/tiny-qwen3:job_nope");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("job_nope", unknown.Err);
        var list = await box.RunAsync("deploy", "list");
        Assert.Equal(0, list.ExitCode);
        Assert.Contains("No deployments yet", list.Out);
        var export = await box.RunAsync("models", "export", "ft:anneal/tiny-qwen3:job_nope", "--out", "out");
        Assert.NotEqual(0, export.ExitCode);
        Assert.Contains("job_nope", export.Err);
        Assert.False(Directory.Exists(Path.Combine(box.Dir, "out")));
    }

    [Fact]
    public async Task Export_refuses_a_folder_that_is_not_empty_and_eval_a_bad_base_url()
    {
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = "ank_x";
        box.Write("out/keep.txt", "mine");
        var export = await box.RunAsync("models", "export", "fft:anneal/tiny-qwen3:job_x", "--out", "out", "--backend", "http://127.0.0.1:9");
        Assert.Equal(2, export.ExitCode);
        Assert.Contains("is not empty", export.Err);
        box.Write("prompts.jsonl", """{"messages":[{"role":"user","content":"hi"}],"expected":"hello"}""" + "\n");
        var eval = await box.RunAsync("eval", "--model", "fft:anneal/tiny-qwen3:job_x", "--prompts", "prompts.jsonl", "--output", "t.jsonl", "--base-url", "ftp://x");
        Assert.Equal(2, eval.ExitCode);
        Assert.Contains("--base-url ftp://x", eval.Err);
        var down = await box.RunAsync("eval", "--model", "fft:anneal/tiny-qwen3:job_x", "--prompts", "prompts.jsonl", "--output", "t.jsonl", "--base-url", "http://127.0.0.1:9/v1");
        Assert.Equal(1, down.ExitCode);
        Assert.Contains("http://127.0.0.1:9/v1/chat/completions", down.Err);
        Assert.False(File.Exists(Path.Combine(box.Dir, "t.jsonl")));
        var generate = await box.RunAsync("generate", "--model", "fft:anneal/tiny-qwen3:job_x", "--prompt", "hi", "--base-url", "http://127.0.0.1:9/v1");
        Assert.Equal(1, generate.ExitCode);
        Assert.Contains("answering with it at http://127.0.0.1:9/v1", generate.Err);
    }
}
