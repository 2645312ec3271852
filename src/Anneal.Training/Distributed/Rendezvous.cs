// How the ranks of one launch exchange NCCL's 128-byte unique id: rank 0 creates it (it embeds rank
// 0's bootstrap address) and publishes it; the others wait for it. On one host the ranks share the
// job's folder, so the id is a file named by the launch's run id (ANNEAL_RUN_ID: a stale id of an
// earlier attempt is never read), written aside and renamed so a reader sees all of it or nothing.
// Across hosts the same two calls become the control plane's rendezvous (rank 0 POSTs the id to
// /internal/jobs/{id}/rendezvous, the others long-poll it); see the README's multi-rank section.
namespace Anneal.Training.Distributed;

public sealed class Rendezvous(string folder, string runId, TimeSpan timeout)
{
    string PathOfId => Path.Combine(folder, $"nccl-id-{runId}");

    public void Publish(byte[] id)
    {
        Directory.CreateDirectory(folder);
        var tmp = PathOfId + ".tmp";
        File.WriteAllBytes(tmp, id);
        File.Move(tmp, PathOfId, overwrite: true);
    }

    public byte[] Await(int length)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(PathOfId))
            {
                var bytes = File.ReadAllBytes(PathOfId);
                if (bytes.Length == length) return bytes;
            }
            Thread.Sleep(50);
        }
        throw new TimeoutException($"rank 0 did not publish the NCCL unique id within {timeout.TotalSeconds:F0} s ({PathOfId})");
    }
}
