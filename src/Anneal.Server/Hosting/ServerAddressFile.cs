// <data-dir>/server.url: the address the folder's server listens on (e.g. http://127.0.0.1:8123),
// written once it listens, so `anneal setup --data-dir DIR` writes the port that folder's server
// really uses instead of assuming 8000. It stays after the server stops: a restart with the same
// --urls listens there again.
namespace Anneal.Server.Hosting;

public static class ServerAddressFile
{
    public const string FileName = "server.url";

    public static void Write(string dataDir, string baseUrl) =>
        File.WriteAllText(Path.Combine(dataDir, FileName), baseUrl + "\n");

    /// <summary>The address last recorded in <paramref name="dataDir"/>, or null when there is none.</summary>
    public static string? Read(string dataDir)
    {
        try
        {
            var text = File.ReadAllText(Path.Combine(dataDir, FileName)).Trim();
            return Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" ? text : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
