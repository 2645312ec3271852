using Anneal.Core.Config;
using Anneal.Core.Datasets;
using Anneal.Core.Training;

namespace Anneal.Core.Tests.Config;

public class TrainingConfigLoaderTests
{
    const string File = "train.toml";

    static TrainingConfig Ok(string toml)
    {
        var (config, errors) = TrainingConfigLoader.Parse(toml, File);
        Assert.Empty(errors);
        return Assert.IsType<TrainingConfig>(config);
    }

    static IReadOnlyList<ConfigError> Bad(string toml)
    {
        var (config, errors) = TrainingConfigLoader.Parse(toml, File);
        Assert.Null(config);
        Assert.NotEmpty(errors);
        return errors;
    }

    static ConfigError OnlyError(string toml)
    {
        var errors = Bad(toml);
        Assert.True(errors.Count == 1, string.Join("\n", errors));
        return errors[0];
    }

    const string Minimal = """
        [job]
        model = "anneal/tiny-qwen3"

        [hyperparameters]
        total_steps = 5

        """;

    [Fact]
    public void Several_nodes_are_refused_naming_the_toml_key()
    {
        var e = OnlyError(Minimal + "[compute]\ngpu_count = 4\nnodes = 2\n");
        Assert.Equal("compute.nodes", e.Key);
        Assert.StartsWith("is 2; several hosts per job are not supported yet", e.Message);
        Assert.Equal(8, e.Line);
        Assert.Equal(4, Ok(Minimal + "[compute]\ngpu_count = 4\nnodes = 1\n").EffectiveConfig["compute"]!["gpu_count"]!.GetValue<long>());
    }

    [Fact]
    public void The_spec_example_loads_as_written()
    {
        var (config, errors) = TrainingConfigLoader.Load(RepoPaths.Of("examples", "configs", "train.toml"));
        Assert.Empty(errors);
        Assert.NotNull(config);
        Assert.Equal("Qwen/Qwen3-4B", config.Model);
        Assert.Equal("ft_data/crafter_sft.jsonl", config.DataPath);
        Assert.Equal(1800, config.PollSeconds);
        Assert.Equal(
            """{"n_epochs":2,"per_device_batch":2,"gradient_accumulation_steps":64,"learning_rate":8E-06,"warmup_ratio":0.03,"training_mode":"full_finetune","use_qlora":false}""",
            config.Hyperparameters.ToJsonString());
        Assert.Equal(
            """{"compute":{"gpu_type":"H100","gpu_count":4,"nodes":1},"data":{},"training":{"mode":"full_finetune","use_qlora":false}}""",
            config.EffectiveConfig.ToJsonString());

        var (settings, hpErrors) = HyperparameterParser.Parse(config.Hyperparameters);
        Assert.Empty(hpErrors);
        Assert.Equal(2.0, settings!.NEpochs);
        Assert.Equal(64, settings.GradientAccumulationSteps);
        Assert.Equal(8e-6, settings.LearningRate);
        Assert.Equal(TrainingModes.FullFinetune, settings.Mode);
    }

    [Fact]
    public void The_lora_example_loads_with_lora_and_validation()
    {
        var path = RepoPaths.Of("examples", "configs", "lora.toml");
        var (config, errors) = TrainingConfigLoader.Load(path);
        Assert.Empty(errors);
        Assert.NotNull(config);
        var settings = HyperparameterParser.Parse(config.Hyperparameters).Settings!;
        Assert.Equal(TrainingModes.Lora, settings.Mode);
        Assert.Equal(8, settings.Lora.R);
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj"], settings.Lora.Targets);
        Assert.True(settings.Validation.Enabled);
        Assert.Equal(5, settings.Validation.EvalSteps);
        Assert.Equal(20, settings.TotalSteps);
        Assert.Equal("lora-tiny", config.Tags["example"]);

        // Its data paths are relative to the config's folder and the files are valid datasets.
        var train = config.ResolveDataPath(config.DataPath!, out _);
        var val = config.ResolveDataPath(config.ValidationPath!, out _);
        Assert.NotNull(train);
        Assert.NotNull(val);
        var report = DatasetValidator.ValidateFile(train);
        Assert.Empty(report.Errors);
        Assert.Equal(20, report.NumExamples);
        Assert.True(DatasetValidator.ValidateFile(val).IsValid);
    }

    [Fact]
    public void Every_section_is_read()
    {
        var c = Ok("""
            [algorithm]
            type = "offline"
            method = "sft"
            variety = "lora"

            [job]
            model = "Qwen/Qwen3-VL-2B-Instruct"
            data_path = "d.jsonl"
            poll_seconds = 2.5

            [data]
            validation_path = "v.jsonl"
            topology = { container_count = 1 }

            [model]
            max_images_per_message = 2

            [hyperparameters]
            steps = 9
            global_batch = 8
            per_device_batch = 2

            [hyperparameters.parallelism]
            tensor_parallel = 1

            [tags]
            team = "rl"
            run = 3
            """);
        Assert.Equal("d.jsonl", c.DataPath);
        Assert.Equal("v.jsonl", c.ValidationPath);
        Assert.Equal(2.5, c.PollSeconds);
        Assert.Equal(2, c.MaxImagesPerMessage);
        Assert.Equal(new Dictionary<string, string> { ["team"] = "rl", ["run"] = "3" }, c.Tags);
        Assert.Equal("lora", c.Hyperparameters["training_mode"]!.GetValue<string>());
        Assert.Equal(1, c.Hyperparameters["parallelism"]!["tensor_parallel"]!.GetValue<long>());
        Assert.Equal(1, c.EffectiveConfig["data"]!["topology"]!["container_count"]!.GetValue<long>());
        var s = HyperparameterParser.Parse(c.Hyperparameters).Settings!;
        Assert.Equal(9, s.TotalSteps);
        Assert.Equal(4, s.GradientAccumulationSteps);
    }

    [Fact]
    public void Syntax_errors_give_line_and_column()
    {
        var e = OnlyError("[job]\nmodel = \n");
        Assert.Equal(File, e.File);
        Assert.Equal("syntax", e.Key);
        Assert.Equal(2, e.Line);
        Assert.Contains("column 9", e.Message);
        Assert.StartsWith("train.toml:2: syntax: ", e.ToString());
    }

    [Fact]
    public void A_key_defined_twice_is_a_syntax_error_with_its_line()
    {
        var e = OnlyError(Minimal + "[job]\n");
        Assert.Equal(6, e.Line);
        Assert.Contains("job", e.Message);
    }

    [Fact]
    public void A_missing_model_is_reported()
    {
        var e = OnlyError("[hyperparameters]\nn_epochs = 1\n");
        Assert.Equal("job.model", e.Key);
        Assert.Contains("is required", e.Message);

        e = OnlyError("[job]\ndata = \"x.jsonl\"\n[hyperparameters]\nn_epochs = 1\n");
        Assert.Equal("job.model", e.Key);
        Assert.Equal("is required (a string)", e.Message);
    }

    [Fact]
    public void A_model_override_replaces_or_supplies_job_model()
    {
        var (c, errors) = TrainingConfigLoader.Parse("[hyperparameters]\nn_epochs = 1\n", File, "Qwen/Qwen3-0.6B");
        Assert.Empty(errors);
        Assert.Equal("Qwen/Qwen3-0.6B", c!.Model);
        Assert.Equal("Qwen/Qwen3-0.6B", TrainingConfigLoader.Parse(Minimal, File, "Qwen/Qwen3-0.6B").Config!.Model);
    }

    [Fact]
    public void Unknown_section_gets_did_you_mean()
    {
        var e = OnlyError(Minimal + "[hyperparameter]\nn_epochs = 1\n");
        Assert.Equal("hyperparameter", e.Key);
        Assert.Equal(6, e.Line);
        Assert.StartsWith("unknown section [hyperparameter]; did you mean [hyperparameters]?", e.Message);
    }

    [Fact]
    public void Unknown_key_gets_did_you_mean_with_its_line()
    {
        var e = OnlyError(Minimal + "learnign_rate = 1e-5\n");
        Assert.Equal("hyperparameters.learnign_rate", e.Key);
        Assert.Equal(6, e.Line);
        Assert.Contains("did you mean 'learning_rate'?", e.Message);
    }

    [Fact]
    public void Unknown_key_in_job_is_rejected()
    {
        var e = OnlyError("[job]\nmodel = \"m\"\npoll_second = 5\n[hyperparameters]\nn_epochs = 1\n");
        Assert.Equal("job.poll_second", e.Key);
        Assert.Equal(3, e.Line);
        Assert.Contains("did you mean 'poll_seconds'?", e.Message);
    }

    [Fact]
    public void A_bad_hyperparameter_names_key_line_value_and_range()
    {
        var e = OnlyError(Minimal + "learning_rate = -0.5\n");
        Assert.Equal("hyperparameters.learning_rate", e.Key);
        Assert.Equal(6, e.Line);
        Assert.Equal("must be a number > 0 and ≤ 1, got -0.5", e.Message);
        Assert.Equal("train.toml:6: hyperparameters.learning_rate: must be a number > 0 and ≤ 1, got -0.5", e.ToString());
    }

    [Fact]
    public void Packing_is_read_from_hyperparameters()
    {
        Assert.True(Ok(Minimal + "packing = true\n").Hyperparameters["packing"]!.GetValue<bool>());
        Assert.True(HyperparameterParser.Parse(Ok(Minimal + "packing = true\n").Hyperparameters).Settings!.Packing);
        Assert.False(HyperparameterParser.Parse(Ok(Minimal).Hyperparameters).Settings!.Packing);
    }

    [Fact]
    public void A_packing_value_that_is_not_a_boolean_names_its_line()
    {
        var e = OnlyError(Minimal + "packing = \"yes\"\n");
        Assert.Equal("hyperparameters.packing", e.Key);
        Assert.Equal(6, e.Line);
        Assert.Equal("must be true or false, got the string \"yes\"", e.Message);
    }

    [Fact]
    public void Misspelt_packing_gets_did_you_mean_with_its_line()
    {
        var e = OnlyError(Minimal + "pakcing = true\n");
        Assert.Equal("hyperparameters.pakcing", e.Key);
        Assert.Equal(6, e.Line);
        Assert.Contains("did you mean 'packing'?", e.Message);
    }

    [Fact]
    public void A_quoted_integer_is_rejected()
    {
        var e = OnlyError(Minimal + "per_device_batch = \"2\"\n");
        Assert.Equal("hyperparameters.per_device_batch", e.Key);
        Assert.Contains("must be an integer between 1 and 4096, got the string \"2\"", e.Message);
    }

    [Fact]
    public void Missing_epochs_and_steps_is_reported_on_the_hyperparameters_section()
    {
        var e = OnlyError("[job]\nmodel = \"m\"\n\n[hyperparameters]\nlearning_rate = 1e-5\n");
        Assert.Equal("hyperparameters", e.Key);
        Assert.Equal(4, e.Line);
        Assert.Contains("at least one of n_epochs or total_steps", e.Message);
    }

    [Fact]
    public void Training_errors_are_named_by_their_toml_keys()
    {
        var errors = Bad(Minimal + """
            [training]
            mode = "fft"

            [training.lora]
            r = 0
            target_modules = ["q_proj", "qproj"]

            [training.validation]
            evaluation_strategy = "step"
            """);
        var byKey = errors.ToDictionary(e => e.Key);
        Assert.Equal(7, byKey["training.mode"].Line);
        Assert.Contains("got \"fft\"", byKey["training.mode"].Message);
        Assert.Equal(10, byKey["training.lora.r"].Line);
        Assert.Equal("must be an integer between 1 and 1024, got 0", byKey["training.lora.r"].Message);
        Assert.Equal(11, byKey["training.lora.target_modules[1]"].Line);
        Assert.Contains("did you mean 'q_proj'?", byKey["training.lora.target_modules[1]"].Message);
        Assert.Equal(14, byKey["training.validation.evaluation_strategy"].Line);
        Assert.Equal(4, errors.Count);
    }

    [Fact]
    public void Unknown_training_key_is_rejected()
    {
        var e = OnlyError(Minimal + "[training]\nmode = \"lora\"\nlora_r = 8\n");
        Assert.Equal("training.lora_r", e.Key);
        Assert.Equal(8, e.Line);
        Assert.Contains("unknown key", e.Message);
    }

    [Fact]
    public void Other_sections_check_their_types()
    {
        var errors = Bad(Minimal + """
            [compute]
            gpu_count = 0

            [model]
            max_images_per_message = "many"

            [tags]
            list = [1]
            """);
        var byKey = errors.ToDictionary(e => e.Key, e => e.Message);
        Assert.Equal("must be an integer between 1 and 1024, got 0", byKey["compute.gpu_count"]);
        Assert.Contains("got the string \"many\"", byKey["model.max_images_per_message"]);
        Assert.Contains("got a list", byKey["tags.list"]);
        Assert.Equal(3, errors.Count);
    }

    [Fact]
    public void A_section_that_is_not_a_table_is_rejected()
    {
        var e = OnlyError("job = \"Qwen/Qwen3-4B\"\n[hyperparameters]\nn_epochs = 1\n");
        Assert.Equal("job", e.Key);
        Assert.Equal(1, e.Line);
        Assert.Contains("must be an object (a table), got the string", e.Message);
    }

    [Fact]
    public void Dates_are_not_accepted_as_values()
    {
        var e = OnlyError(Minimal + "seed = 2024-01-01\n");
        Assert.Equal("hyperparameters.seed", e.Key);
        Assert.Contains("dates and times are not allowed", e.Message);
    }

    [Fact]
    public void Algorithm_variety_sets_the_mode_and_training_mode_wins_with_a_warning_when_they_disagree()
    {
        Assert.Equal("qlora", Ok(Minimal + "[algorithm]\nvariety = \"qlora\"\n").Hyperparameters["training_mode"]!.GetValue<string>());
        var c = Ok(Minimal + "[algorithm]\nvariety = \"lora\"\n[training]\nmode = \"full_finetune\"\n");
        Assert.Equal(TrainingModes.FullFinetune, c.Settings.Training.Mode);
        var w = Assert.Single(c.Warnings);
        Assert.Equal("algorithm.variety", w.Key);
        Assert.Contains("disagrees with training.mode = \"full_finetune\"; training.mode is used", w.Message);
    }

    [Fact]
    public void A_key_given_in_both_training_and_hyperparameters_is_rejected()
    {
        var e = OnlyError(Minimal + "training_mode = \"lora\"\n[training]\nmode = \"lora\"\n");
        Assert.Equal("hyperparameters.training_mode", e.Key);
        Assert.Contains("also given as training.mode", e.Message);
    }

    [Fact]
    public void A_missing_file_is_an_error_not_an_exception()
    {
        var (config, errors) = TrainingConfigLoader.Load(Path.Combine(Path.GetTempPath(), "no-such-anneal.toml"));
        Assert.Null(config);
        Assert.Contains("cannot read the config", Assert.Single(errors).Message);
    }

    [Fact]
    public void Data_paths_are_tried_from_the_working_directory_then_the_config_folder()
    {
        var dir = Directory.CreateTempSubdirectory();
        try
        {
            var configPath = Path.Combine(dir.FullName, "cfg", "train.toml");
            Directory.CreateDirectory(Path.GetDirectoryName(configPath)!);
            System.IO.File.WriteAllText(configPath, Minimal);
            var config = TrainingConfigLoader.Load(configPath).Config!;
            var name = $"anneal-data-{Guid.NewGuid():N}.jsonl";

            Assert.Null(config.ResolveDataPath(name, out var tried));
            Assert.Equal([Path.GetFullPath(name), Path.Combine(dir.FullName, "cfg", name)], tried);

            System.IO.File.WriteAllText(Path.Combine(dir.FullName, "cfg", name), "{}");
            Assert.Equal(Path.Combine(dir.FullName, "cfg", name), config.ResolveDataPath(name, out _));

            var absolute = Path.Combine(dir.FullName, "cfg", name);
            Assert.Equal(absolute, config.ResolveDataPath(absolute, out tried));
            Assert.Single(tried);
        }
        finally { dir.Delete(true); }
    }
}
