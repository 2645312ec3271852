#!/usr/bin/env bash
# The spec's agent loop against one Anneal server, ROUNDS times:
#   eval (answers through the server's /v1) → filter → train → deploy → next round.
# Prints the mean score of every round, then of the last model. Needs a running server and a key
# (`anneal serve`, `anneal setup`: SYNTH_API_KEY and BACKEND_BASE_URL in the environment or .env).
#
#   examples/agent_loop.sh                       # tiny model, 2 rounds, on CPU in about a minute
#   MODEL=Qwen/Qwen3-0.6B CONFIG=my.toml ROUNDS=3 examples/agent_loop.sh
#
# The tiny model starts with random weights, so its own answers score near 0: filter keeps the good
# traces and, with --correct-with-expected, trains the failed ones on the expected answer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ANNEAL=${ANNEAL:-anneal}
MODEL=${MODEL:-anneal/tiny-qwen3}
ROUNDS=${ROUNDS:-2}
CONFIG=${CONFIG:-$here/agent_loop.toml}
PROMPTS=${PROMPTS:-$here/data/eval_prompts.jsonl}
WORK=${WORK:-$(mktemp -d -t anneal-loop-XXXXXX)}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16}
mkdir -p "$WORK"

score() { sed -n 's/^Mean score: \([0-9.]*\).*/\1/p' "$1"; }

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: $MODEL"
  $ANNEAL eval --model "$MODEL" --prompts "$PROMPTS" --output "$WORK/traces-$round.jsonl" \
    --max-new-tokens "$MAX_NEW_TOKENS" | tee "$WORK/eval-$round.txt"
  echo "round $round score $(score "$WORK/eval-$round.txt") ($MODEL)" >> "$WORK/scores.txt"
  $ANNEAL filter --traces "$WORK/traces-$round.jsonl" --output "$WORK/train-$round.jsonl" \
    --min-score 0.99 --correct-with-expected
  $ANNEAL train --type sft --config "$CONFIG" --dataset "$WORK/train-$round.jsonl" --model "$MODEL" \
    --poll-interval 0.5 | tee "$WORK/train-$round.txt"
  MODEL=$(sed -n 's/^fine_tuned_model: \(.*\)$/\1/p' "$WORK/train-$round.txt" | tail -1)
  [ -n "$MODEL" ] || { echo "no fine_tuned_model in the output of round $round" >&2; exit 1; }
  $ANNEAL deploy "$MODEL"
done

echo "== after $ROUNDS rounds: $MODEL"
$ANNEAL eval --model "$MODEL" --prompts "$PROMPTS" --output "$WORK/traces-final.jsonl" \
  --max-new-tokens "$MAX_NEW_TOKENS" | tee "$WORK/eval-final.txt"
echo "final score $(score "$WORK/eval-final.txt") ($MODEL)" >> "$WORK/scores.txt"
echo "== scores"
cat "$WORK/scores.txt"
