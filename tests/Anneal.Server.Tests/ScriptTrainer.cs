// Stand-in trainer processes for runner tests: small bash scripts that speak the trainer protocol
// (one TrainerEvent JSON line per event on stdout, diagnostics on stderr, exit codes) so the
// runner's process handling is tested for real. Invoked as: bash SCRIPT trainer run --spec PATH.
namespace Anneal.Server.Tests;

public static class ScriptTrainer
{
    // Common prelude: $SPEC, $OUT (spec.output_dir), $JOBDIR; records args and CUDA_VISIBLE_DEVICES.
    const string Prelude = """
        set -u
        SPEC="$4"
        JOBDIR="$(dirname "$SPEC")"
        OUT="$(sed -n 's/.*"output_dir": *"\([^"]*\)".*/\1/p' "$SPEC")"
        echo "$@" > "$JOBDIR/args.txt"
        echo "cuda=[${CUDA_VISIBLE_DEVICES-unset}]" >> "$JOBDIR/args.txt"
        echo "server=[${ANNEAL_SERVER_PID-unset}]" >> "$JOBDIR/args.txt"
        emit() { printf '%s\n' "$1"; }
        # A complete checkpoint folder (state and optimizer files), as the real trainer writes one.
        checkpoint() { mkdir -p "$OUT/checkpoints/step-$1"; echo "{\"step\":$1}" > "$OUT/checkpoints/step-$1/trainer_state.json"; echo x > "$OUT/checkpoints/step-$1/optimizer.bin"; }
        """;

    /// <summary>Two progress steps, a validation summary, a checkpoint, then final/ and sft.completed; exit 0.</summary>
    public const string Succeeds = Prelude + """

        echo "loading model" >&2
        emit '{"type":"sft.model.loading","level":"info","message":"loading"}'
        emit 'not json: a stray print from a library'
        emit '{"type":"sft.progress","level":"info","message":"step 1/2","data":{"step":1,"total_steps":2,"epoch":0.5,"loss":2.5,"lr":0.001,"grad_norm":1.5,"tokens_per_second":120.5,"eta_seconds":3,"trained_tokens":40}}'
        checkpoint 1
        emit "{\"type\":\"sft.checkpoint.saved\",\"level\":\"info\",\"message\":\"saved\",\"data\":{\"step\":1,\"path\":\"$OUT/checkpoints/step-1\",\"metrics\":{\"loss\":2.5}}}"
        emit '{"type":"sft.progress","level":"info","message":"step 2/2","data":{"step":2,"total_steps":2,"epoch":1.0,"loss":2.0,"lr":0.0005,"grad_norm":1.1,"tokens_per_second":130,"eta_seconds":0,"trained_tokens":80}}'
        emit '{"type":"sft.validation.summary","level":"info","message":"val","data":{"step":2,"val_loss":2.25}}'
        mkdir -p "$OUT/final/merged"
        emit "{\"type\":\"sft.completed\",\"level\":\"info\",\"message\":\"done\",\"data\":{\"output_dir\":\"$OUT\",\"final_path\":\"$OUT/final\",\"trained_tokens\":80}}"
        exit 0
        """;

    public const string UserDataError = Prelude + """

        echo "Traceback-like diagnostics" >&2
        emit '{"type":"sft.failed","level":"error","message":"bad data","data":{"error":{"code":"user_data_error","message":"Line 3: messages[1].role must be one of system, user, assistant, tool"}}}'
        exit 2
        """;

    /// <summary>Progress, 25 stderr lines, then SIGKILL of itself (exit 137) with no event.</summary>
    /// <summary>Reports sft.failed on stdout only (nothing on stderr), exit 2.</summary>
    public const string SilentUserDataError = Prelude + """

        emit '{"type":"sft.failed","level":"error","message":"training file train.jsonl: bad","data":{"error":{"code":"user_data_error","message":"training file train.jsonl: bad"}}}'
        exit 2
        """;

    public const string Killed = Prelude + """

        emit '{"type":"sft.progress","level":"info","message":"step 1","data":{"step":1,"total_steps":10,"epoch":0.1,"loss":3.0}}'
        for i in $(seq 1 25); do echo "stderr line $i" >&2; done
        kill -9 $$
        """;

    /// <summary>Runs until SIGTERM, then reports sft.cancelled and exits 130 (as the real trainer does).</summary>
    public const string RunsUntilTerm = Prelude + """

        trap 'emit "{\"type\":\"sft.cancelled\",\"level\":\"info\",\"message\":\"stopped at step boundary\",\"data\":{\"step\":1}}"; exit 130' TERM
        emit '{"type":"sft.progress","level":"info","message":"step 1","data":{"step":1,"total_steps":1000,"epoch":0.0}}'
        touch "$JOBDIR/started"
        while true; do sleep 0.05; done
        """;

    /// <summary>Ignores SIGTERM: only the kill after the grace period stops it.</summary>
    public const string IgnoresTerm = Prelude + """

        trap '' TERM
        touch "$JOBDIR/started"
        while true; do sleep 0.05; done
        """;

    /// <summary>Saves a checkpoint, then runs until stopped (for restart tests).</summary>
    public const string CheckpointThenWaits = Prelude + """

        trap 'exit 130' TERM
        checkpoint 3
        emit "{\"type\":\"sft.checkpoint.saved\",\"level\":\"info\",\"message\":\"saved\",\"data\":{\"step\":3,\"path\":\"$OUT/checkpoints/step-3\"}}"
        touch "$JOBDIR/started"
        while true; do sleep 0.05; done
        """;

    /// <summary>Runs until a signal: SIGUSR1 saves a checkpoint (step 4) and stops, as the real trainer does on pause and shutdown.</summary>
    public const string CheckpointsOnUsr1 = Prelude + """

        trap 'exit 130' TERM
        trap 'checkpoint 4; emit "{\"type\":\"sft.checkpoint.saved\",\"level\":\"info\",\"message\":\"saved\",\"data\":{\"step\":4,\"path\":\"$OUT/checkpoints/step-4\"}}"; emit "{\"type\":\"sft.cancelled\",\"level\":\"warning\",\"message\":\"stopped\"}"; exit 130' USR1
        checkpoint 3
        emit "{\"type\":\"sft.checkpoint.saved\",\"level\":\"info\",\"message\":\"saved\",\"data\":{\"step\":3,\"path\":\"$OUT/checkpoints/step-3\"}}"
        touch "$JOBDIR/started"
        while true; do sleep 0.05; done
        """;

    /// <summary>Sleeps briefly and succeeds (for ordering tests).</summary>
    public const string ShortSuccess = Prelude + """

        sleep 0.5
        mkdir -p "$OUT/final"
        emit "{\"type\":\"sft.completed\",\"level\":\"info\",\"message\":\"done\",\"data\":{\"output_dir\":\"$OUT\",\"final_path\":\"$OUT/final\",\"trained_tokens\":10}}"
        exit 0
        """;

    public static IReadOnlyList<string> Write(string script)
    {
        var dir = Path.Combine(Path.GetTempPath(), "anneal-server-tests", "trainers");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, Guid.NewGuid().ToString("n") + ".sh");
        File.WriteAllText(path, script.Replace("\r\n", "\n"));
        return ["bash", path];
    }
}
