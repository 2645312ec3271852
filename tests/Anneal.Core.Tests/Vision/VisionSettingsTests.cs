// The image settings ([model] min_pixels / max_pixels / max_images_per_message) and train_vision
// ([training]) from a config file and from an API payload: typed into TrainingSettings, errors named
// by their TOML key and line, and refused for text-only models by the checks the server and the
// CLI share.
using System.Text.Json.Nodes;
using Anneal.Core.Config;
using Anneal.Core.Models;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Vision;

public class VisionSettingsTests
{
    const string Vl = """
        [job]
        model = "anneal/tiny-qwen3-vl"

        [training]
        mode = "lora"
        train_vision = "merger"

        [model]
        min_pixels = 1024
        max_pixels = 4096
        max_images_per_message = 2

        [hyperparameters]
        total_steps = 5

        """;

    [Fact]
    public void Model_and_training_keys_reach_the_settings()
    {
        var (config, errors) = TrainingConfigLoader.Parse(Vl, "train.toml");
        Assert.Empty(errors);
        var s = config!.Settings.Training;
        Assert.Equal(new VisionSettings(1024, 4096, 2), s.Vision);
        Assert.Equal(VisionTrainingParts.Merger, s.TrainVision);
        Assert.Equal(2, config.MaxImagesPerMessage);
        // The payload the CLI sends carries them as hyperparameters, so the job records them.
        Assert.Equal(4096, config.Hyperparameters["vision"]!["max_pixels"]!.GetValue<long>());
        Assert.Equal("merger", config.Hyperparameters["train_vision"]!.GetValue<string>());
        Assert.Empty(JobChecks.CheckAgainstModel(ModelRegistry.Find(ModelRegistry.TinyVisionModelId)!, s));
    }

    [Fact]
    public void Upstream_model_config_images_per_message_lands_in_the_same_place()
    {
        var (config, errors) = TrainingConfigLoader.Parse("[job]\nmodel = \"Qwen/Qwen3-VL-2B-Instruct\"\n[model_config]\nmax_images_per_message = 3\n[hyperparameters]\nn_epochs = 1\n", "t.toml");
        Assert.Empty(errors);
        Assert.Equal(3, config!.Settings.Training.Vision.MaxImagesPerMessage);
    }

    [Theory]
    [InlineData("min_pixels = 5000\nmax_pixels = 4096", "model.min_pixels", "5000 is larger than max_pixels 4096")]
    [InlineData("max_pixels = 10", "model.max_pixels", "between 1024 and 67108864")]
    [InlineData("min_pixel = 1024", "model.min_pixel", "unknown key")]
    public void Bad_model_keys_are_named_with_their_line(string keys, string key, string message)
    {
        var (config, errors) = TrainingConfigLoader.Parse($"[job]\nmodel = \"anneal/tiny-qwen3-vl\"\n[hyperparameters]\nn_epochs = 1\n[model]\n{keys}\n", "t.toml");
        Assert.Null(config);
        var e = Assert.Single(errors);
        Assert.Equal(key, e.Key);
        Assert.Contains(message, e.Message);
        Assert.Equal(6, e.Line);
    }

    [Fact]
    public void An_unknown_train_vision_value_lists_the_choices()
    {
        var (config, errors) = TrainingConfigLoader.Parse("[job]\nmodel = \"anneal/tiny-qwen3-vl\"\n[training]\ntrain_vision = \"all\"\n[hyperparameters]\nn_epochs = 1\n", "t.toml");
        Assert.Null(config);
        var e = Assert.Single(errors);
        Assert.Equal("training.train_vision", e.Key);
        Assert.Contains("\"merger\"", e.Message);
        Assert.Equal(4, e.Line);
    }

    [Fact]
    public void Api_payload_spells_them_under_hyperparameters()
    {
        var (settings, errors) = JobSettings.Normalize(new JsonObject
        {
            ["total_steps"] = 2, ["train_vision"] = "tower",
            ["vision"] = new JsonObject { ["max_pixels"] = 8192, ["max_images_per_message"] = 1 },
        }, null, null);
        Assert.Empty(errors);
        Assert.Equal(new VisionSettings(null, 8192, 1), settings!.Training.Vision);
        Assert.Equal(VisionTrainingParts.Tower, settings.Training.TrainVision);
    }

    [Fact]
    public void Image_settings_on_a_text_only_model_are_refused_by_name_or_warned_about()
    {
        var s = new TrainingSettings { TotalSteps = 1, TrainVision = VisionTrainingParts.Tower, Vision = new VisionSettings(MaxPixels: 4096, MaxImagesPerMessage: 1) };
        var text = ModelRegistry.Find(ModelRegistry.TinyModelId)!;
        var errors = JobChecks.CheckAgainstModel(text, s);
        Assert.Equal(["training.train_vision", "model.max_pixels"], errors.Select(e => e.TomlKey));
        Assert.Equal(["hyperparameters.train_vision", "hyperparameters.vision.max_pixels"], errors.Select(e => e.Field));
        Assert.All(errors, e => Assert.Contains("needs a vision model", e.Message));
        // Upstream's VL example configs carry max_images_per_message: on a text model it is inert, said by a warning.
        var warning = Assert.Single(JobChecks.WarningsAgainstModel(text, s));
        Assert.Equal("hyperparameters.vision.max_images_per_message", warning.Field);
        Assert.Empty(JobChecks.WarningsAgainstModel(ModelRegistry.Find(ModelRegistry.TinyVisionModelId)!, s));
    }
}
