// Creating an API key directly in a local server's data folder (no HTTP: the key is what
// authenticates HTTP). The storage is the server's: Anneal.Server.ApiKeys.
namespace Anneal.Cli.Setup;

public static class LocalKeys
{
    public static string DefaultDataDir => new Anneal.Server.ServerOptions().DataDir;

    /// <summary>Creates a key for the organisation and returns it in clear (it is stored hashed).</summary>
    public static Task<string> CreateAsync(string dataDir, string org, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        Directory.CreateDirectory(dataDir);
        return Anneal.Server.Auth.ApiKeys.CreateAsync(dataDir, org);
    }

    /// <summary>
    /// Whether the folder holds a server's database (list and revoke never create one): its SQLite
    /// file, or the record of the PostgreSQL database it belongs to (`anneal serve --database`).
    /// </summary>
    public static bool Exists(string dataDir) =>
        File.Exists(Path.Combine(dataDir, "anneal.db")) || Anneal.Server.Storage.DatabaseUrl.Recorded(dataDir) is not null;
}
