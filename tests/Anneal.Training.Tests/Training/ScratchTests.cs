using System.Diagnostics;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Model;
using Anneal.Training.Tokenization;
using TorchSharp;
using Xunit.Abstractions;
namespace Anneal.Training.Tests.Training;
public class ScratchTests(ITestOutputHelper output)
{
    [Fact]
    public void Timing()
    {
        var dir = TinyFixture.ModelDir;
        torch.set_num_threads(1);
        var sw = Stopwatch.StartNew();
        output.WriteLine($"tiny model {sw.ElapsedMilliseconds} ms"); sw.Restart();
        var tok = Qwen3Tokenizer.Load(dir);
        output.WriteLine($"tokenizer {sw.ElapsedMilliseconds} ms vocab {tok.VocabSize}"); sw.Restart();
        using var model = ModelFolder.Load(dir, torch.CPU, torch.ScalarType.Float32);
        output.WriteLine($"model load {sw.ElapsedMilliseconds} ms params {model.parameters().Sum(p => p.numel())}"); sw.Restart();
        var tmp = Directory.CreateTempSubdirectory().FullName;
        var path = TinyFixture.WriteChatSet(tmp);
        var (ex, stats) = SftData.Load(path, r => { var e = Qwen3ChatTemplate.Encode(tok, r); return (e.InputIds, e.Trained); }, 512);
        output.WriteLine($"data {sw.ElapsedMilliseconds} ms {stats}"); sw.Restart();
        output.WriteLine(tok.Decode(ex[0].Ids));
        output.WriteLine(string.Join(",", ex[0].Trained.Select(t => t ? 1 : 0)));
        var plan = SftData.PlanEpoch(ex, 1, 0, 4, 1, 512, false);
        for (int i = 0; i < 5; i++)
        {
            using var b = SftData.Collate(ex, plan[0][0], tok.PadTokenId, torch.CPU);
            var loss = Trainer.AccumulateGradients(model, [b], b.TrainedTokens);
            output.WriteLine($"step {sw.ElapsedMilliseconds} ms loss {loss} shape {string.Join("x", b.Ids.shape)}"); sw.Restart();
        }
    }
}
