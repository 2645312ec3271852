// /v1 through the control plane for what the text engine alone did not serve: a qft: (QLoRA) model
// runs its adapter on the base quantised to NF4, exactly as the job trained it (equal to the NF4
// model with the adapter, greedy); Qwen3-VL models (the tiny base and a full fine-tune) answer
// about images sent by the official OpenAI client as data: URIs, token for token as `anneal
// generate --image`; an https image is fetched by the server through its SSRF guards (a loopback
// address is refused by name); bad image requests get OpenAI-shaped 400s naming the field; both
// kinds deploy to `ready`.
using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Anneal.Core.Models;
using Anneal.Core.Training;
using Anneal.Inference.Engine;
using Anneal.Server;
using Anneal.Server.Files;
using Anneal.Server.Storage;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using OpenAI;
using OpenAI.Chat;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Anneal.Inference.Tests;

[Collection(ServingCollection.Name)]
public sealed class VisionAndQloraServingTests(ServingFixture f) : IAsyncLifetime
{
    const string Prompt = "What is the capital of France?";
    const string Question = "What colour is the square?";
    const string QftId = "qft:anneal/tiny-qwen3:job_qlora1";
    const string VlFftId = "fft:anneal/tiny-qwen3-vl:job_vl1";
    static readonly byte[] BluePng = Png(new SKColor(30, 40, 220));

    RunningServer _server = null!;
    WebApplication _images = null!;
    int _port;
    string _dir = "", _key = "", _qftExpected = "";
    string QloraFinal => Path.Combine(_dir, "qlora", "final");
    string VlBase => Path.Combine(_dir, "tiny-qwen3-vl");
    string VlFft => Path.Combine(_dir, "vl-fft");

    static byte[] Png(SKColor colour)
    {
        using var bitmap = new SKBitmap(70, 50);
        for (var y = 0; y < 50; y++)
            for (var x = 0; x < 70; x++)
                bitmap.SetPixel(x, y, Math.Abs(x - y) < 3 ? SKColors.Black : colour);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    public async Task InitializeAsync()
    {
        _dir = Path.Combine(Path.GetTempPath(), "anneal-vl-qft-tests", Guid.NewGuid().ToString("n"));
        WriteQloraAdapter();
        TinyVisionModel.EnsureCreated(VlBase);
        using (var model = VisionModelFolder.Load(VlBase, CPU, ScalarType.Float32))
        {
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                    if (name.EndsWith("mlp.down_proj.weight")) p.mul_(-1.5);
            VisionModelFolder.Save(model, VlFft, VlBase);
        }

        // An https image host on loopback, allowed by name for this test only (as the upload tests do).
        var builder = WebApplication.CreateSlimBuilder();
        var cert = SelfSigned();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(cert)));
        _images = builder.Build();
        _images.MapGet("/blue.png", () => Results.Bytes(BluePng, "image/png"));
        await _images.StartAsync();
        _port = new Uri(_images.Urls.First()).Port;

        var dataDir = Path.Combine(_dir, "data");
        _server = await ServerHost.StartAsync(new ServerOptions
        {
            Urls = "http://127.0.0.1:0", DataDir = dataDir, InferenceUrl = f.Server.BaseUrl, InferenceKey = ServingFixture.Key,
            ImageFetch = new ImageFetchSettings { TestHosts = new HashSet<string> { "localhost" }, Timeout = TimeSpan.FromSeconds(5) },
        });
        _key = _server.FirstApiKey!;
        var db = Db.Open(dataDir);
        using var conn = db.Connect();
        foreach (var (id, baseModel, path) in new[] { (QftId, ModelRegistry.TinyModelId, Path.Combine(QloraFinal, "merged")), (VlFftId, ModelRegistry.TinyVisionModelId, VlFft) })
            Db.Exec(conn, null, "INSERT INTO fine_tuned_models (id, org, base_model, job_id, path, status, created_at) VALUES (@id, 'default', @base, @job, @path, 'succeeded', @t)",
                ("@id", id), ("@base", baseModel), ("@job", id.Split(':')[^1]), ("@path", path), ("@t", Db.Now()));
    }

    /// <summary>A QLoRA job's final/: the PEFT adapter (non-zero B) trained on the NF4 base; and its greedy answer on that base.</summary>
    void WriteQloraAdapter()
    {
        var lora = new LoraSettings(4, 8, 0, ["q_proj", "v_proj", "down_proj"]);
        using var model = ModelFolder.Load(f.BaseDir, CPU, ScalarType.Float32, lora, nf4Base: true);
        var random = new Random(7);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name.Contains(".lora_"))
                {
                    using var t = torch.tensor(Enumerable.Range(0, (int)p.numel()).Select(_ => (float)(random.NextDouble() - 0.5) * 0.6f).ToArray()).view(p.shape);
                    p.copy_(t);
                }
        Lora.SaveAdapter(model, QloraFinal, ServingFixture.BaseId);
        var tokenizer = Trainer.LoadTokenizer(f.BaseDir);
        var record = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = Prompt }) };
        var ids = tokenizer.Encode(Qwen3ChatTemplate.Render(record, addGenerationPrompt: true));
        _qftExpected = tokenizer.Decode(Generation.Greedy(model, ids, 20, Generation.StopIds(tokenizer, model.Config, f.BaseDir)).ToArray());
    }

    static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        await _images.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    ChatClient Client(string model) =>
        new(model, new ApiKeyCredential(_key), new OpenAIClientOptions { Endpoint = new Uri(_server.BaseUrl + "/v1") });

    static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens };

    [Fact]
    public async Task A_qft_model_runs_its_adapter_on_the_nf4_base_it_was_trained_on()
    {
        ChatCompletion answer = await Client(QftId).CompleteChatAsync([new UserChatMessage(Prompt)], Greedy(20));
        Assert.Equal(_qftExpected, answer.Content[0].Text);
        Assert.Equal(QftId, answer.Model);
        var nf4 = f.Server.Catalog.LoadedEngines.OfType<ServingEngine>().Where(e => e.Nf4Base).ToList();
        Assert.Contains(nf4, e => e.LoadedAdapters.Contains(Path.GetFullPath(QloraFinal)));
    }

    async Task<string> AnnealGenerate(string folder, int maxTokens)
    {
        var image = Path.Combine(_dir, "blue.png");
        await File.WriteAllBytesAsync(image, BluePng);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await TrainerProcess.GenerateAsync(folder, Question, maxTokens, stdout, stderr, CancellationToken.None, [image]);
        Assert.True(code == 0, stderr.ToString());
        return stdout.ToString()[..^Environment.NewLine.Length];
    }

    [Theory]
    [InlineData(ModelRegistry.TinyVisionModelId)]
    [InlineData(VlFftId)]
    public async Task A_vision_model_answers_about_a_data_uri_image_as_anneal_generate_does(string model)
    {
        var expected = await AnnealGenerate(model == VlFftId ? VlFft : VlBase, 12);
        var message = new UserChatMessage(ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(BluePng), "image/png"), ChatMessageContentPart.CreateTextPart(Question));
        ChatCompletion answer = await Client(model).CompleteChatAsync([message], Greedy(12));
        Assert.Equal(expected, answer.Content[0].Text);
        Assert.Equal(model, answer.Model);
        // The prompt counts the image's tokens: 64×64 after resizing → 4×4 patches → 2×2 merged tokens.
        var textOnly = (await Client(model).CompleteChatAsync([new UserChatMessage(Question)], Greedy(1))).Value.Usage.InputTokenCount;
        Assert.Equal(textOnly + 4 + 2, answer.Usage.InputTokenCount);   // + <|vision_start|>, <|vision_end|>
    }

    [Fact]
    public async Task An_https_image_is_fetched_by_the_server_and_a_loopback_address_is_refused()
    {
        var viaData = new UserChatMessage(ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(BluePng), "image/png"), ChatMessageContentPart.CreateTextPart(Question));
        var viaUrl = new UserChatMessage(ChatMessageContentPart.CreateImagePart(new Uri($"https://localhost:{_port}/blue.png")), ChatMessageContentPart.CreateTextPart(Question));
        var client = Client(ModelRegistry.TinyVisionModelId);
        Assert.Equal((await client.CompleteChatAsync([viaData], Greedy(8))).Value.Content[0].Text,
            (await client.CompleteChatAsync([viaUrl], Greedy(8))).Value.Content[0].Text);

        var (status, error) = await Post(ModelRegistry.TinyVisionModelId, $"https://127.0.0.1:{_port}/blue.png");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("messages[0].content[0].image_url.url", error["param"]!.GetValue<string>());
        Assert.Contains("refused", error["message"]!.GetValue<string>());
        Assert.Contains("loopback", error["message"]!.GetValue<string>());
    }

    async Task<(HttpStatusCode, JsonObject)> Post(string model, string url, string? baseUrl = null, string? key = null)
    {
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key ?? _key);
        var body = new JsonObject
        {
            ["model"] = model, ["max_tokens"] = 4,
            ["messages"] = new JsonArray(new JsonObject
            {
                ["role"] = "user",
                ["content"] = new JsonArray(
                    new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } },
                    new JsonObject { ["type"] = "text", ["text"] = Question }),
            }),
        };
        using var response = await http.PostAsJsonAsync((baseUrl ?? _server.BaseUrl) + "/v1/chat/completions", body);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        return (response.StatusCode, (json["error"] as JsonObject) ?? json);
    }

    [Theory]
    [InlineData(ServingFixture.BaseId, "png", "takes no images: image_url parts need a Qwen3-VL model")]
    [InlineData(ModelRegistry.TinyVisionModelId, "data:image/png;base64,@@@", "not valid base64")]
    [InlineData(ModelRegistry.TinyVisionModelId, "data:image/png;base64,aGVsbG8gd29ybGQ=", "the image cannot be used: not a PNG, JPEG, WebP or GIF image")]
    [InlineData(ModelRegistry.TinyVisionModelId, "ftp://example.com/a.png", "expected a data:image/...;base64,... URI or an https:// URL")]
    public async Task Bad_images_get_a_400_naming_the_field(string model, string url, string message)
    {
        if (url == "png") url = "data:image/png;base64," + Convert.ToBase64String(BluePng);
        var (status, error) = await Post(model, url);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("messages[0].content[0].image_url.url", error["param"]!.GetValue<string>());
        Assert.Contains(message, error["message"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(QftId)]
    [InlineData(VlFftId)]
    public async Task Qft_and_vision_models_deploy_to_ready(string model)
    {
        using var api = new HttpClient { BaseAddress = new Uri(_server.BaseUrl + "/api/") };
        api.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", _key);
        var created = await api.PostAsJsonAsync("learning/deployments", new JsonObject { ["model"] = model });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var d = (await created.Content.ReadFromJsonAsync<JsonObject>())!;
        for (var i = 0; i < 300 && d["status"]!.GetValue<string>() == "loading"; i++)
        {
            await Task.Delay(100);
            d = (await api.GetFromJsonAsync<JsonObject>($"learning/deployments/{d["id"]!.GetValue<string>()}"))!;
        }
        Assert.True(d["status"]!.GetValue<string>() == "ready", d.ToJsonString());
    }

    [Fact]
    public async Task The_inference_process_alone_never_fetches_an_https_image()
    {
        var (status, error) = await Post(ModelRegistry.TinyVisionModelId, $"https://localhost:{_port}/blue.png", f.Server.BaseUrl, ServingFixture.Key);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("not fetched by this inference process", error["message"]!.GetValue<string>());
    }
}
