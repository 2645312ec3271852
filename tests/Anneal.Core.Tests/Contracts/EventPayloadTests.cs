// The typed event payloads: what the trainer writes is what the server and CLI read, field by field.
using System.Text.Json.Nodes;
using Anneal.Core.Contracts;

namespace Anneal.Core.Tests.Contracts;

public class EventPayloadTests
{
    [Fact]
    public void Progress_round_trips_with_snake_case_wire_names()
    {
        var sent = new ProgressData(12, 40, 0.3, 2.5, 1e-4, null, 1234.5, 60, 9000);
        var json = EventData.ToJson(sent);
        Assert.Equal(["step", "total_steps", "epoch", "loss", "lr", "grad_norm", "tokens_per_second", "eta_seconds", "trained_tokens"],
            json.Select(p => p.Key));
        Assert.Equal(sent, EventData.Read<ProgressData>(json));
    }

    [Fact]
    public void Checkpoint_payload_keeps_its_metrics_object()
    {
        var json = EventData.ToJson(new CheckpointSavedData(20, "checkpoints/step-20", new JsonObject { [MetricNames.TrainLoss] = 1.5 }));
        var read = EventData.Read<CheckpointSavedData>(json)!;
        Assert.Equal((20L, "checkpoints/step-20"), (read.Step, read.Path));
        Assert.Equal(1.5, read.Metrics![MetricNames.TrainLoss]!.GetValue<double>());
    }

    [Fact]
    public void A_payload_of_another_shape_reads_as_null_not_as_an_exception()
    {
        Assert.Null(EventData.Read<ProgressData>(null));
        Assert.Null(EventData.Read<ProgressData>(JsonNode.Parse("""{"step":"twelve"}""")!.AsObject()));
        Assert.Null(EventData.Read<ValidationSummaryData>(JsonNode.Parse("""{"step":1,"val_loss":[1]}""")!.AsObject()));
    }
}
