// Turns a job's `hyperparameters` JSON into TrainingSettings, or into errors that name the key,
// the value and what is allowed (unknown keys get a "did you mean"). TODO(core): implement.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Training;

public static class HyperparameterParser
{
    public static (TrainingSettings? Settings, IReadOnlyList<ErrorItem> Errors) Parse(JsonObject? hyperparameters) =>
        throw new NotImplementedException("HyperparameterParser.Parse");
}
