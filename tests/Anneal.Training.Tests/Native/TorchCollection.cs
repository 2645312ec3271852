// The optimizer, kernel and native-loading tests run one at a time, after the parallel tests:
// module construction draws from libtorch's global random generator, and tests elsewhere that seed
// it and expect exact values must not see those draws.
namespace Anneal.Training.Tests.Native;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection
{
    public const string Name = "Serial torch tests (perf)";
}
