// Errors the user can fix (bad data, bad config, does not fit in memory), with the stable
// ErrorCodes value the server records on the failed job. Everything else is internal_error.
using Anneal.Core.Contracts;

namespace Anneal.Training;

public sealed class TrainerUserException(string code, string message) : Exception(message)
{
    /// <summary>One of <see cref="ErrorCodes"/>: user_data_error, user_config_error, out_of_memory.</summary>
    public string Code { get; } = code;

    public static TrainerUserException Config(string message) => new(ErrorCodes.UserConfigError, message);
    public static TrainerUserException BadData(string message) => new(ErrorCodes.UserDataError, message);
}
