// config.json as different transformers versions write it: older ones give rope_theta and
// rope_scaling null, newer ones rope_parameters {rope_type, rope_theta}; both mean plain RoPE.
using Anneal.Training.Model;

namespace Anneal.Training.Tests.Model;

public sealed class Qwen3ConfigTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("anneal-config-").FullName;
    public void Dispose() => Directory.Delete(dir, recursive: true);

    Qwen3Config Load(string rope)
    {
        var path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, $$"""{"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, {{rope}}}""");
        return Qwen3Config.Load(path);
    }

    [Fact]
    public void Rope_theta_is_read_from_either_layout()
    {
        Assert.Equal(1e6, Load("\"rope_theta\": 1000000.0, \"rope_scaling\": null").RopeTheta);
        Assert.Equal(1e6, Load("\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}").RopeTheta);
        Assert.Equal(5e5, Load("\"rope_scaling\": {\"rope_type\": \"default\"}, \"rope_theta\": 500000").RopeTheta);
    }

    [Fact]
    public void Scaled_rope_is_refused_naming_the_key()
    {
        var e = Assert.Throws<TrainerUserException>(() => Load("\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1000000.0, \"factor\": 4.0}"));
        Assert.Contains("rope_parameters.rope_type \"yarn\"", e.Message);
        e = Assert.Throws<TrainerUserException>(() => Load("\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}"));
        Assert.Contains("rope_scaling is set", e.Message);
    }
}
