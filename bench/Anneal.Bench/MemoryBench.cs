// The memory model (Core's MemoryModel) against a measured peak: builds the trainer's Qwen3 model,
// FlatAdamW and chunked loss for one shape, runs two optimizer steps on random tokens, and prints
// the estimate beside the measured peak above the resident set before the model was built.
// CPU: peak resident set (VmHWM reset through /proc/self/clear_refs); CUDA: device memory in use
// after the steps (the CUDA context and the caching allocator's reserve included). Run one shape
// per process (bench/memory-cpu.sh does) so that earlier allocations do not blur the baseline.
using System.Text.Json;
using Anneal.Core.Training;
using Anneal.Training.Kernels;
using Anneal.Training.Model;
using Anneal.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;
using Shapes = Anneal.Training.Memory.DeviceMemory;

static class MemoryBench
{
    public static void Run(Options o, Device device)
    {
        if (o.Mode is not ("full" or "lora")) throw new ArgumentException($"--mode {o.Mode}: expected full or lora");
        var cfg = TrainBench.Shape(o.Shape);
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var lora = o.Mode == "lora" ? new LoraSettings() : null;
        var baseline = PeakMemory.Reset(device);

        torch.manual_seed(0);
        var model = new Qwen3ForCausalLM(cfg, device, dtype, lora);
        if (o.Checkpointing)
            model.Decoder.LayerRunner = (layer, h, a) => ActivationCheckpoint.Run(
                (x, c) => layer.call(x, new AttentionInputs(c[0], c[1], c.Count > 2 ? c[2] : null, null)),
                h, [a.Cos, a.Sin], layer.parameters());
        var optimizer = new FlatAdamW(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)), weightDecay: 0.01);
        var ids = randint(0, cfg.VocabSize, [o.Micro, o.Seq], device: device);
        var positions = arange(o.Seq, device: device).unsqueeze(0).expand(o.Micro, o.Seq);
        var targets = ids.narrow(1, 1, o.Seq - 1).reshape(-1);
        for (int step = 0; step < 2; step++)
        {
            using var scope = NewDisposeScope();
            var hidden = model.Hidden(ids, positions, null);
            var h = hidden.narrow(1, 0, o.Seq - 1).reshape(-1, cfg.HiddenSize);
            (ChunkedCrossEntropy.Sum(h, model.OutputWeight, targets) / (o.Micro * (o.Seq - 1.0))).backward();
            using var norm = optimizer.Step(1e-5, 1.0);
            optimizer.ZeroGrad();
        }
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        double measured = device.type == DeviceType.CUDA ? DeviceMemory.UsedBytes(device) : PeakMemory.Read(device) - baseline;

        var estimate = MemoryModel.Estimate(Shapes.Shape(cfg), new MemoryPlan
        {
            Mode = o.Mode == "lora" ? TrainingModes.Lora : TrainingModes.FullFinetune,
            ElementBytes = dtype == ScalarType.Float32 ? 4 : 2,
            MicroBatchRows = o.Micro, RowTokens = o.Seq, ActivationCheckpointing = o.Checkpointing,
        });
        // The fixed workspace allowance is for GPU libraries; on CPU compare without it.
        long predicted = device.type == DeviceType.CPU ? estimate.Peak - estimate.Workspace : estimate.Peak;
        var row = new Dictionary<string, object?>
        {
            ["model"] = o.Shape, ["params_m"] = Math.Round(model.parameters().Sum(p => p.numel()) / 1e6, 1), ["mode"] = o.Mode,
            ["micro"] = o.Micro, ["seq"] = o.Seq, ["ckpt"] = o.Checkpointing, ["device"] = device.type.ToString().ToLowerInvariant(),
            ["estimate_mib"] = Math.Round(predicted / 1048576.0), ["measured_mib"] = Math.Round(measured / 1048576.0),
            ["error_pct"] = Math.Round(100 * (predicted - measured) / measured, 1),
            ["activations_mib"] = Math.Round(estimate.Activations / 1048576.0), ["optimizer_mib"] = Math.Round(estimate.Optimizer / 1048576.0),
        };
        var json = JsonSerializer.Serialize(row);
        Console.WriteLine(json);
        if (o.Json is not null) File.AppendAllText(o.Json, json + "\n");
    }
}
