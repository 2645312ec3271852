// The `batching` hyperparameter: how the examples of an optimizer step are laid out in forward
// passes. Every choice but `packed` keeps one example per row, so attention stays plain causal
// (the flash kernel, no explicit mask); `padded` and `token_budget` also give every optimizer step
// the same examples, so their losses agree and only the time per step differs.
//   padded        examples in shuffled order; per_device_batch rows a micro-batch, padded to its longest
//   bucketed      like padded, but steps are drawn from length-sorted groups (less padding, steps
//                 of similar lengths)
//   token_budget  the steps of `padded`; within a step, rows sorted by length and cut into
//                 micro-batches of at most per_device_batch × (longest row of the data) padded tokens,
//                 so short examples make fewer, wider forward passes (the default)
//   packed        examples laid end to end in rows of sequence_length, a block-diagonal mask (built
//                 on the device from segment ids) so no example attends to another
namespace Anneal.Core.Training;

public static class BatchingModes
{
    public const string Padded = "padded";
    public const string Bucketed = "bucketed";
    public const string TokenBudget = "token_budget";
    public const string Packed = "packed";

    public static readonly IReadOnlyList<string> All = [Padded, Bucketed, TokenBudget, Packed];

    /// <summary>What a job that names no batching gets.</summary>
    public const string Default = TokenBudget;

    /// <summary>The job's batching: `batching` when given, `packing = true` (the old spelling) as packed, else the default.</summary>
    public static string Of(TrainingSettings s) => s.Batching ?? (s.Packing ? Packed : Default);
}
