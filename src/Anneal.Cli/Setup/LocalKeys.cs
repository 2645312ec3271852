// Creating an API key directly in a local server's data folder (no HTTP: the key is what
// authenticates HTTP). The storage is the server's: Anneal.Server.ApiKeys.
namespace Anneal.Cli.Setup;

public static class LocalKeys
{
    public static string DefaultDataDir => new Anneal.Server.ServerOptions().DataDir;

    /// <summary>Creates a key for the organisation and returns it in clear (it is stored hashed).</summary>
    public static Task<string> CreateAsync(string dataDir, string org, CancellationToken ct)
    {
        _ = ct;
        // TODO(cli): call Anneal.Server.ApiKeys.CreateAsync(dataDir, org) once the server branch lands.
        throw new NotSupportedException($"creating keys in {dataDir} for '{org}' needs Anneal.Server.ApiKeys");
    }
}
