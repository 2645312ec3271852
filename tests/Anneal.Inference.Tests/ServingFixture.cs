// One inference server for the tests of this assembly, serving three models of the tiny Qwen3:
// the base, a full fine-tune (`fft:`: the base with perturbed weights, saved as a Hugging Face
// folder) and a LoRA adapter (`ft:`: PEFT folder over the base, plus its merged folder to compare
// with `anneal generate`). Generated once per run in a temp folder.
using Anneal.Core.Training;
using Anneal.Inference.Engine;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Inference.Tests;

public sealed class ServingFixture : IAsyncLifetime
{
    public const string BaseId = "anneal/tiny-qwen3";
    public const string FftId = "fft:anneal/tiny-qwen3:job_fft";
    public const string FtId = "ft:anneal/tiny-qwen3:job_ft";
    public const string Ft2Id = "ft:anneal/tiny-qwen3:job_ft2";
    public const string Key = "test-key";

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "anneal-inference-tests", Guid.NewGuid().ToString("n"));
    public string BaseDir => Path.Combine(Root, "tiny-qwen3");
    public string FftDir => Path.Combine(Root, "fft");
    public string AdapterDir => Path.Combine(Root, "ft", "final");
    public string MergedDir => Path.Combine(AdapterDir, "merged");
    public string Adapter2Dir => Path.Combine(Root, "ft2", "final");
    public RunningInference Server { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        NativeLibraries.EnsureTorchLoaded();
        torch.set_num_threads(1);
        TinyModel.EnsureCreated(BaseDir);
        using (var model = ModelFolder.Load(BaseDir, CPU, ScalarType.Float32))
        {
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                    if (name.EndsWith("mlp.down_proj.weight")) p.mul_(-1.5);
            ModelFolder.Save(model, FftDir, BaseDir);
        }
        WriteAdapter(AdapterDir, seed: 1, mergedDir: MergedDir);
        WriteAdapter(Adapter2Dir, seed: 2, mergedDir: null);
        Server = await InferenceHost.StartAsync(new InferenceOptions
        {
            Urls = "http://127.0.0.1:0",
            ApiKey = Key,
            RouteByHeaders = true,
            Models = ModelCatalog.FromSpecs([$"{BaseId}={BaseDir}", $"{FftId}={FftDir}", $"{FtId}={AdapterDir}", $"{Ft2Id}={Adapter2Dir}"]),
            Engine = new EngineOptions { MaxBatch = 4, MaxModelLength = 512, Device = "cpu" },
        });
    }

    /// <summary>A LoRA adapter on q/v/down projections with non-zero B, so it changes the answers.</summary>
    void WriteAdapter(string dir, int seed, string? mergedDir)
    {
        var lora = new LoraSettings(4, 8, 0, ["q_proj", "v_proj", "down_proj"]);
        using var model = ModelFolder.Load(BaseDir, CPU, ScalarType.Float32, lora);
        var random = new Random(seed);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.Contains(".lora_"))
                {
                    var values = Enumerable.Range(0, (int)p.numel()).Select(_ => (float)(random.NextDouble() - 0.5) * 0.6f).ToArray();
                    using var t = torch.tensor(values).view(p.shape);
                    p.copy_(t);
                }
        Lora.SaveAdapter(model, dir, BaseId);
        if (mergedDir is not null) ModelFolder.Save(model, mergedDir, BaseDir);
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class ServingCollection : ICollectionFixture<ServingFixture>
{
    public const string Name = "inference server";
}
