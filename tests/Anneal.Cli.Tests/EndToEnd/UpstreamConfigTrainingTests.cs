// Upstream's SFT example configs (their key sets, tests/fixtures/upstream-configs) train here with
// the model switched to the tiny one: `anneal train` → server → real trainer, on CPU. Keys without
// effect are named as warnings; QLoRA configs become QLoRA jobs (the spec's TOML with use_qlora
// trains QLoRA end to end in JobExecutionTests).
using Anneal.Core.Contracts;

namespace Anneal.Cli.Tests.EndToEnd;

[Collection("trainer")]
public class UpstreamConfigTrainingTests
{
    static string Fixture(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Anneal.slnx")))
                return File.ReadAllText(Path.Combine(dir.FullName, "tests", "fixtures", "upstream-configs", name));
        throw new DirectoryNotFoundException("Anneal.slnx");
    }

    // One full fine-tune and one LoRA example; the others load in Core's UpstreamConfigTests.
    public static TheoryData<string, string, string> Trainable => new()
    {
        { "crafter_fft.toml", "fft:", "hyperparameters.world_size" },
        { "sft_qwen3_vl_2b_test.toml", "ft:", "model_config.max_model_len" },
    };

    [Theory]
    [MemberData(nameof(Trainable))]
    public async Task An_upstream_example_trains_to_succeeded(string name, string prefix, string warning)
    {
        await using var server = await TestServer.StartAsync(runJobs: true);
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = server.ApiKey;
        box.Environment["BACKEND_BASE_URL"] = server.BaseUrl;
        box.Write("configs/" + name, Fixture(name));
        box.Write("data.jsonl", Samples.Dataset(8));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "configs/" + name, "--dataset", "data.jsonl",
            "--model", Samples.TinyModel, "--examples", "4", "--poll-interval", "0.3");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("status: succeeded", result.Out);
        Assert.Contains($"fine_tuned_model: {prefix}{Samples.TinyModel}:", result.Out);
        if (warning.Length > 0) Assert.Contains($"warning: {Path.Combine(box.Dir, "configs", name)}", result.Err + result.Out);
        if (warning.Length > 0) Assert.Contains(warning, result.Err + result.Out);
    }

    [Theory]
    [InlineData("coder_lora_4b.toml")]
    [InlineData("coder_lora_small.toml")]
    [InlineData("coder_lora_30b.toml")]
    [InlineData("crafter_vlm_sft_example.toml")]
    public async Task An_upstream_qlora_example_becomes_a_qlora_job(string name)
    {
        using var box = new CliSandbox();
        box.Environment["SYNTH_API_KEY"] = "sk-unused";
        box.Environment["BACKEND_BASE_URL"] = "http://127.0.0.1:9";
        box.Write("configs/" + name, Fixture(name));
        box.Write("data.jsonl", Samples.Dataset(4));
        var result = await box.RunAsync("train", "--type", "sft", "--config", "configs/" + name, "--dataset", "data.jsonl",
            "--model", Samples.TinyModel, "--dry-run");
        Assert.True(result.ExitCode == ExitCodes.Ok, result.ToString());
        Assert.Contains("qlora", result.Out);
        Assert.DoesNotContain("full_finetune", result.Out);
    }
}
