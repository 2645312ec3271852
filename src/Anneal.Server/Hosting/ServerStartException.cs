// Why the server could not start, in one user-readable sentence (Message): the data folder is in
// use by another server, or the listen address is taken. The CLI prints Message on one line.
namespace Anneal.Server;

public sealed class ServerStartException(string message, Exception? inner = null) : Exception(message, inner);
