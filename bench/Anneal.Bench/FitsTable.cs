// What fits on which card, from the memory model alone (no torch needed): for each Qwen3 size and
// training mode, the estimated peak with the memory model's own choices (activation checkpointing,
// optimizer state) at per_device_batch 1 × 2048 tokens, bf16, and whether it fits 24/48/80/141 GB.
// Estimates, not measurements: bench/README.md says which rows have been measured.
//   dotnet run -c Release --project bench/Anneal.Bench -- fits
using Anneal.Core.Training;

static class FitsTable
{
    static readonly (string Name, long Bytes)[] Cards = [("24 GB", 24_000_000_000), ("48 GB", 48_000_000_000), ("80 GB", 80_000_000_000), ("141 GB", 141_000_000_000)];

    public static void Run(Options o)
    {
        Console.WriteLine($"| model | mode | {string.Join(" | ", Cards.Select(c => c.Name))} |");
        Console.WriteLine($"|---|---|{string.Concat(Cards.Select(_ => "---|"))}");
        foreach (var (id, shape) in ModelShape.Qwen3)
        foreach (var mode in new[] { TrainingModes.FullFinetune, TrainingModes.Lora, TrainingModes.Qlora })
        {
            var plan = new MemoryPlan { Mode = mode, ElementBytes = 2, MicroBatchRows = 1, RowTokens = o.Seq, GradientAccumulationSteps = 8 };
            var cells = Cards.Select(c =>
            {
                var d = MemoryModel.Decide(shape, plan, "auto", OptimizerPrecisions.Auto, c.Bytes);
                if (!d.Fits) return "no";
                var how = (d.ActivationCheckpointing ? "ckpt" : "") + (d.OptimizerPrecision == OptimizerPrecisions.Lean ? (d.ActivationCheckpointing ? ", lean" : "lean") : "");
                return $"{d.Estimate.Peak / 1e9:F0} GB{(how.Length > 0 ? $" ({how})" : "")}";
            });
            Console.WriteLine($"| {id} | {mode} | {string.Join(" | ", cells)} |");
        }
    }
}
