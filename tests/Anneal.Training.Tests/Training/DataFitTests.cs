// Examples that do not fit sequence_length: dropped (no assistant token left) and truncated (cut,
// still trained) are counted separately and reported as a warning with the longest length and what
// to raise; more than half of a file dropped fails the job (user_data_error) instead of training on
// a remnant, for the training and the validation file alike. Messages name the user's file, and
// the trainer's stderr (the job's log) tells the same story.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;
using Anneal.Core.Training;

namespace Anneal.Training.Tests.Training;

[Collection(TorchRandomCollection.Name)]
public sealed class DataFitTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-fit-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    const int SequenceLength = 256;
    static readonly TrainingSettings Quick = new() { TotalSteps = 1, PerDeviceBatch = 2, LearningRate = 1e-3, SequenceLength = SequenceLength };
    static readonly string Long = string.Join(" ", Enumerable.Repeat("a very long sentence about nothing in particular", 60));

    static string Record(string user, string assistant) => new JsonObject
    {
        ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = user },
            new JsonObject { ["role"] = "assistant", ["content"] = assistant }),
    }.ToJsonString();

    string Write(string name, int facts, int longPrompts, int longAnswers)
    {
        var lines = TinyFixture.Facts.Take(facts).Select(f => Record(f.Question, f.Answer))
            .Concat(Enumerable.Range(0, longPrompts).Select(i => Record(Long + i, "Yes.")))
            .Concat(Enumerable.Range(0, longAnswers).Select(i => Record("Tell me a story.", Long + i)));
        var path = Path.Combine(dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void Dropped_and_truncated_examples_are_counted_apart_in_a_warning_with_the_longest_length()
    {
        var data = Write("train.jsonl", facts: 8, longPrompts: 1, longAnswers: 1);
        var (exit, events, stderr) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick));
        Assert.Equal(TrainerProcess.ExitSucceeded, exit);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared);
        Assert.Equal("warning", prepared.Level);
        var d = prepared.Data!;
        Assert.Equal((9, 10, 1, 1, SequenceLength),
            (d["examples"]!.GetValue<int>(), d["total_examples"]!.GetValue<int>(), d["dropped"]!.GetValue<int>(),
             d["truncated"]!.GetValue<int>(), d["sequence_length"]!.GetValue<int>()));
        var longest = d["longest_example_tokens"]!.GetValue<int>();
        Assert.True(longest > SequenceLength, $"longest {longest}");
        Assert.Contains("9 of 10 examples kept", prepared.Message);
        Assert.Contains($"1 of 10 dropped (no assistant tokens within sequence_length {SequenceLength}), 1 truncated to {SequenceLength}", prepared.Message);
        Assert.Contains($"The longest example has {longest} tokens: raise [hyperparameters].sequence_length to {longest}", prepared.Message);
        Assert.Contains("sft.data.prepared [warning] 9 of 10 examples kept", stderr);
        Assert.Contains("sft.completed", stderr);
    }

    [Fact]
    public void Data_that_fits_is_reported_at_info_level()
    {
        var data = Write("train.jsonl", facts: 8, longPrompts: 0, longAnswers: 0);
        var (exit, events, _) = TinyFixture.Run(TinyFixture.Spec(dir, data, Quick));
        Assert.Equal(TrainerProcess.ExitSucceeded, exit);
        var prepared = Assert.Single(events, e => e.Type == EventTypes.DataPrepared);
        Assert.Equal("info", prepared.Level);
        Assert.Equal((0, 0), (prepared.Data!["dropped"]!.GetValue<int>(), prepared.Data!["truncated"]!.GetValue<int>()));
    }

    [Fact]
    public void More_than_half_dropped_fails_naming_the_uploaded_file_and_the_length_to_use()
    {
        var data = Write("0f3a9c.blob", facts: 2, longPrompts: 3, longAnswers: 0);
        var spec = TinyFixture.Spec(dir, data, Quick) with { TrainingFileName = "mydata.jsonl (file_abc)" };
        var (exit, events, stderr) = TinyFixture.Run(spec);
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.Equal(ErrorCodes.UserDataError, failed.Data!["error"]!["code"]!.GetValue<string>());
        Assert.StartsWith($"training file mydata.jsonl (file_abc): 3 of 5 examples have no assistant tokens within sequence_length {SequenceLength}", failed.Message);
        Assert.Contains("raise [hyperparameters].sequence_length to at least ", failed.Message);
        Assert.Contains("more than half", failed.Message);
        Assert.DoesNotContain(dir, failed.Message);
        Assert.DoesNotContain(events, e => e.Type == EventTypes.Progress);
        // The job's log (stderr) has the story, not only the event stream.
        Assert.Contains("sft.model.loading", stderr);
        Assert.Contains("sft.failed [error] training file mydata.jsonl (file_abc): 3 of 5", stderr);
    }

    [Fact]
    public void A_validation_file_mostly_dropped_fails_the_same_way()
    {
        var train = Write("train.jsonl", facts: 8, longPrompts: 0, longAnswers: 0);
        var validation = Write("val.blob", facts: 1, longPrompts: 2, longAnswers: 0);
        var spec = TinyFixture.Spec(dir, train, Quick with { Validation = new ValidationSettings(Enabled: true) }, validationFile: validation) with { ValidationFileName = "val.jsonl (file_v)" };
        var (exit, events, _) = TinyFixture.Run(spec);
        Assert.Equal(TrainerProcess.ExitUserError, exit);
        var failed = Assert.Single(events, e => e.Type == EventTypes.Failed);
        Assert.StartsWith($"validation file val.jsonl (file_v): 2 of 3 examples have no assistant tokens within sequence_length {SequenceLength}", failed.Message);
    }
}
