namespace Anneal.Server; internal static class AssemblyMarker { }
