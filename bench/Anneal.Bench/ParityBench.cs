// Anneal's side of the parity check against Hugging Face transformers (bench/parity/hf_parity.py
// writes the model folder and the reference). Loads the folder with the trainer's loader
// (ModelFolder.Load), computes logits on the reference's token ids, then trains the reference's
// batches for its steps through the trainer's step code (Trainer.AccumulateGradients, FlatAdamW with
// the reference's betas, eps, weight decay and constant lr; no clipping, as the reference) and
// writes {dtype, device, logits: {logits, lse, argmax}, losses} for bench/parity/compare_parity.py.
//   Anneal.Bench parity --model-dir DIR --reference parity_reference.json [--dtype float32|bfloat16]
//     [--device cpu|cuda] --json OUT.json [--make-tiny-model]   (generates the tiny model at --model-dir, for plumbing checks)
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anneal.Training;
using Anneal.Training.Checkpoints;
using Anneal.Training.Data;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

static class ParityBench
{
    public static void Run(Options o, Device device)
    {
        if (o.ModelDir is null || o.Reference is null || o.Json is null)
            throw new ArgumentException("parity needs --model-dir DIR --reference FILE --json OUT");
        var dtype = o.Dtype switch
        {
            "float32" => ScalarType.Float32,
            "bfloat16" => ScalarType.BFloat16,
            _ => throw new ArgumentException($"--dtype {o.Dtype}: expected float32 or bfloat16"),
        };
        var reference = JsonNode.Parse(File.ReadAllText(o.Reference))!.AsObject();
        var logitIds = LongMatrix(reference["logit_ids"]!);
        var columns = reference["logit_columns"]!.AsArray().Select(c => c!.GetValue<long>()).ToArray();
        var train = reference["train"]!.AsObject();
        var batches = train["batches"]!.AsArray().Select(b => LongMatrix(b!)).ToList();
        var schedule = train["schedule"]!.AsArray().Select(s => s!.GetValue<int>()).ToArray();
        var betas = train["betas"]!.AsArray().Select(b => b!.GetValue<double>()).ToArray();
        double lr = train["lr"]!.GetValue<double>(), eps = train["eps"]!.GetValue<double>(), wd = train["weight_decay"]!.GetValue<double>();

        var clock = Stopwatch.StartNew();
        // Plumbing check without a Hugging Face folder: the trainer's tiny model, generated on demand.
        if (o.MakeTinyModel) Anneal.Training.Model.TinyModel.EnsureCreated(o.ModelDir);
        using var model = ModelFolder.Load(o.ModelDir, device, dtype);

        // Logits on fixed ids: the compared columns, and log-sum-exp / argmax over the full vocabulary.
        JsonObject logits;
        model.eval();
        using (no_grad())
        using (NewDisposeScope())
        {
            var (B, T) = (logitIds.Length, logitIds[0].Length);
            var ids = tensor(logitIds.SelectMany(r => r).ToArray(), dtype: ScalarType.Int64).view(B, T).to(device);
            var positions = arange(T, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(B, T);
            var z = model.call(ids, positions, null).to(ScalarType.Float32);                     // (B, T, V)
            var picked = z.index_select(2, tensor(columns, dtype: ScalarType.Int64).to(device)).cpu(); // (B, T, C)
            var lse = z.logsumexp(2).cpu();                                                           // (B, T)
            var argmax = z.argmax(2).cpu();                                                           // (B, T)
            logits = new JsonObject
            {
                ["logits"] = Nested(picked.data<float>().ToArray(), B, T, columns.Length),
                ["lse"] = Nested(lse.data<float>().ToArray(), B, T, 1),
                ["argmax"] = new JsonArray(Enumerable.Range(0, B).Select(b =>
                    (JsonNode)new JsonArray(Enumerable.Range(0, T).Select(t => (JsonNode)JsonValue.Create(argmax[b, t].item<long>())).ToArray())).ToArray()),
            };
        }

        // Training steps: every position after the first of each row is a target (labels = ids, as the reference).
        model.train();
        using var optimizer = new FlatAdamW(model.named_parameters().Select(p => (p.name, p.parameter)),
            beta1: betas[0], beta2: betas[1], eps: eps, weightDecay: wd, decay: (_, _) => true);
        var losses = new JsonArray();
        var padId = 0;
        foreach (var b in schedule)
        {
            var examples = batches[b].Select((row, i) => new SftExample(i + 1, row.Select(x => (int)x).ToArray(),
                row.Select((_, t) => t > 0).ToArray())).ToList();
            using var batch = SftData.Collate(examples, examples.Select((_, i) => new[] { i }).ToList(), padId, device);
            var loss = Trainer.AccumulateGradients(model, [batch], batch.TrainedTokens);
            optimizer.Step(lr);
            optimizer.ZeroGrad();
            losses.Add(loss);
        }

        var result = new JsonObject
        {
            ["engine"] = "anneal", ["dtype"] = o.Dtype, ["device"] = device.type.ToString().ToLowerInvariant(),
            ["model_dir"] = o.ModelDir, ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
            ["logits"] = logits, ["losses"] = losses,
        };
        File.WriteAllText(o.Json, result.ToJsonString());
        Console.WriteLine($"parity {o.Dtype} on {device.type}: wrote {o.Json}; losses {string.Join(" ", losses.Select(l => l!.GetValue<double>().ToString("F4")))}");
    }

    static long[][] LongMatrix(JsonNode node) =>
        node.AsArray().Select(r => r!.AsArray().Select(x => x!.GetValue<long>()).ToArray()).ToArray();

    /// <summary>(B·T·C) values → [[[...]]] (C = 1: [[...]]).</summary>
    static JsonArray Nested(float[] values, int B, int T, int C) =>
        new(Enumerable.Range(0, B).Select(b => (JsonNode)new JsonArray(Enumerable.Range(0, T).Select(t =>
            C == 1 ? JsonValue.Create((double)values[b * T + t])
                   : (JsonNode)new JsonArray(Enumerable.Range(0, C).Select(c => (JsonNode)JsonValue.Create((double)values[(b * T + t) * C + c])).ToArray())).ToArray())).ToArray());
}
