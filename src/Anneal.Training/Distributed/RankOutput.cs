// What each rank writes. mpirun joins every rank's stdout into one stream (the job's events) and
// every stderr into one (trainer.log), so rank 0 alone speaks the event protocol; the other ranks
// send only their sft.failed event (a rank can fail alone: its out-of-memory, its data) and prefix
// their log lines with "rank N: ".
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training.Distributed;

public static class RankOutput
{
    /// <summary>The events writer of this process: unchanged for rank 0 or a world of one.</summary>
    public static TrainerEvents Events(TextWriter stdout, TextWriter stderr)
    {
        int rank;
        try { rank = RankLaunch.FromEnvironment().Rank; }
        catch (InvalidOperationException) { rank = 0; }   // reported by DataParallel.Join, through rank 0's events
        return rank == 0 ? new TrainerEvents(stdout, stderr) : new TrainerEvents(new FailuresOnly(stdout), new Prefixed(stderr, $"rank {rank}: "));
    }

    sealed class FailuresOnly(TextWriter inner) : TextWriter
    {
        static readonly string Marker = $"\"type\":\"{EventTypes.Failed}\"";
        public override System.Text.Encoding Encoding => inner.Encoding;
        public override void Write(char value) { }
        public override void WriteLine(string? value)
        {
            if (value is not null && value.Contains(Marker, StringComparison.Ordinal)) inner.WriteLine(value);
        }
        public override void Flush() => inner.Flush();
    }

    sealed class Prefixed(TextWriter inner, string prefix) : TextWriter
    {
        public override System.Text.Encoding Encoding => inner.Encoding;
        public override void Write(char value) => inner.Write(value);
        public override void WriteLine(string? value) => inner.WriteLine(prefix + value);
        public override void Flush() => inner.Flush();
    }
}
