// `.anneal/submissions.json` in the working directory: which job a given (dataset, config,
// backend) combination was submitted as, so that re-running `anneal train ... --no-poll` reports
// that job instead of uploading again and creating a second one. Shape:
//   {"<sha256 of backend + dataset bytes + validation bytes + job payload>":
//      {"job_id": "...", "training_file_id": "...", "backend": "...", "created_at": "..."}}
using System.Text.Json;
using Anneal.Core.Contracts;

namespace Anneal.Cli.Train;

public sealed record Submission(string JobId, string TrainingFileId, string? ValidationFileId, string Backend, DateTimeOffset CreatedAt);

public sealed class Submissions(string workingDir)
{
    public string FilePath { get; } = Path.Combine(workingDir, ".anneal", "submissions.json");

    Dictionary<string, Submission> Read()
    {
        if (!File.Exists(FilePath)) return [];
        try
        {
            return JsonSerializer.Deserialize<Dictionary<string, Submission>>(File.ReadAllText(FilePath), AnnealJson.Options) ?? [];
        }
        catch (JsonException)
        {
            // A damaged state file only costs a fresh submission; it never blocks training.
            return [];
        }
    }

    public Submission? Find(string key) => Read().GetValueOrDefault(key);

    public void Save(string key, Submission submission)
    {
        var all = Read();
        all[key] = submission;
        Write(all);
    }

    public void Remove(string key)
    {
        var all = Read();
        if (all.Remove(key)) Write(all);
    }

    void Write(Dictionary<string, Submission> all)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(FilePath)!);
        var tmp = FilePath + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(all, AnnealJson.Indented));
        File.Move(tmp, FilePath, overwrite: true);
    }
}
