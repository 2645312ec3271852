namespace Anneal.Training; internal static class AssemblyMarker { }
