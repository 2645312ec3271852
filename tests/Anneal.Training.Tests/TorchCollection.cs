// libtorch's random generator is process-wide: tests that compare runs drawing random numbers
// (LoRA initialisation, dropout) run alone, after the parallel ones.
namespace Anneal.Training.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchRandomCollection
{
    public const string Name = "torch random generator";
}
