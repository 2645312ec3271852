#!/usr/bin/env bash
# Runs Anneal's training benchmarks and the Hugging Face anchors side by side on a GPU machine
# (no .NET needed: the bundle is self-contained), checks parity with transformers, and prints the
# tables. Usage, in the unpacked bundle (results in $OUT, default ./results):
#   ./run-gpu.sh device-check        CUDA smoke test: tiny model on the GPU vs CPU fp32 losses → device-check.md (exit 1 on failure)
#   ./run-gpu.sh anneal              fixed-shape steps, our rows        → anneal.jsonl
#   ./run-gpu.sh anchor              fixed-shape steps, Hugging Face    → hf_anchor.json
#   ./run-gpu.sh lengths [SHAPE...]  realistic lengths, our rows        → anneal_lengths.jsonl (appends)
#   ./run-gpu.sh anchor-lengths [SHAPE...]  realistic lengths, HF        → hf_anchor_lengths.json
#   ./run-gpu.sh parity              logits + 20 training steps against transformers → parity.md (exit 1 on failure)
#   ./run-gpu.sh vl-parity           Qwen3-VL: preprocessing, logits and loss of one multimodal example against
#                                    transformers, fp32 and bf16 → vl_parity.md (exit 1 on failure; not in all; ~2 min)
#   ./run-gpu.sh memory              the memory model's estimate beside device memory in use → memory.jsonl
#   ./run-gpu.sh table               side-by-side tables                → table.md
#   ./run-gpu.sh all                 everything above, in that order
#   ./run-gpu.sh qlora               QLoRA vs LoRA: one Qwen3-8B-shaped layer, 4 steps of a 1.7B shape → qlora.md (not in all)
#   ./run-gpu.sh nccl                the tiny model's job through `anneal trainer run`, plain and as a world of one
#                                    rank through the NCCL collectives (ZeRO-1, replicated, LoRA): losses compared,
#                                    step times side by side → nccl.md, nccl.json (exit 1 on failure; not in all; < 5 min)
#   ./run-gpu.sh serve               serving: 8 streams with continuous batching vs one stream alone and one at a
#                                    time, ~100M model (bf16 on CUDA) → serve.md (not in all; ~1 min)
# SHAPE: qwen3-0.6b, qwen3-1.7b (default both). Each part stays under 10 minutes on one H100 when the
# lengths parts are run one shape at a time; run them as separate commands where a time limit applies.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results}
PART=${1:-all}
shift || true
SHAPES=("${@:-}")
[[ -z ${SHAPES[0]} ]] && SHAPES=(qwen3-0.6b qwen3-1.7b)
mkdir -p "$OUT"

# libtorch from the installed PyTorch (NativeLibraries also finds it by itself; this makes it explicit).
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
export LD_LIBRARY_PATH=$TL:${LD_LIBRARY_PATH:-}
export ANNEAL_LIBTORCH_DIR=$TL
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ $PART == device-check || $PART == all ]]; then
  # First, and in seconds: a device that does not train like the CPU makes every later figure moot.
  "$HERE/Anneal.Bench" device-check --device cuda --json "$OUT/device-check.json" 2>>"$OUT/device-check.stderr" \
    | tee "$OUT/device-check.md" || DEVICE_CHECK_FAILED=1
fi
if [[ $PART == anneal || $PART == all ]]; then
  rm -f "$OUT/anneal.jsonl"
  bench() { "$HERE/Anneal.Bench" train --device cuda --steps 6 --json "$OUT/anneal.jsonl" "$@" 2>>"$OUT/anneal.stderr" | tail -1; }
  # The anchor's rows, each in its own process.
  bench --shape qwen3-0.6b --mode full --micro 4
  bench --shape qwen3-1.7b --mode full --micro 4
  bench --shape qwen3-0.6b --mode lora --micro 4
  bench --shape qwen3-1.7b --mode lora --micro 4
  bench --shape qwen3-4b --mode lora --micro 4
  bench --shape qwen3-4b --mode full --micro 2 --ckpt
  # fp32 master weights + moments need 16 bytes/parameter (64 GB at 4B); without master weights 12.
  bench --shape qwen3-4b --mode full --micro 2 --ckpt --no-master
  # Lean optimizer state (bf16 moments, stochastically rounded weights): 8 bytes/parameter, as PyTorch.
  bench --shape qwen3-4b --mode full --micro 2 --ckpt --lean
  # What the flat optimizer and the chunked loss each bring (TorchSharp's AdamW, full logits).
  bench --shape qwen3-0.6b --mode full --micro 4 --optimizer torch --loss plain
  bench --shape qwen3-0.6b --mode full --micro 4 --optimizer torch
  bench --shape qwen3-0.6b --mode full --micro 4 --loss plain
fi
if [[ $PART == memory || $PART == all ]]; then
  rm -f "$OUT/memory.jsonl"
  mem() { "$HERE/Anneal.Bench" memory --device cuda --json "$OUT/memory.jsonl" "$@" 2>>"$OUT/memory.stderr" | tail -1; }
  mem --shape qwen3-0.6b --micro 4 --seq 2048
  mem --shape qwen3-0.6b --micro 4 --seq 2048 --mode lora
  mem --shape qwen3-4b --micro 2 --seq 2048 --ckpt
fi
if [[ $PART == anchor || $PART == all ]]; then
  OUT=$OUT python3 "$HERE/anchor/hf_anchor.py"
fi
if [[ $PART == lengths || $PART == all ]]; then
  # The anchor's lengths through the trainer's batching: dataset order (as the anchor's default
  # collator), length bucketing (the trainer's default), bucketing with a token budget (micro-batches
  # of up to 4 × 2048 padded tokens), packing (rows of 2048 tokens, no attention across examples).
  # Each row is a warm-up epoch plus a timed one, in its own process.
  for shape in "${SHAPES[@]}"; do
    for batching in order bucketed budget packed; do
      "$HERE/Anneal.Bench" lengths --device cuda --shape "$shape" --batching "$batching" --micro 4 --seq 2048 \
        --json "$OUT/anneal_lengths.jsonl" 2>>"$OUT/anneal_lengths.stderr" | tail -1
    done
  done
fi
if [[ $PART == anchor-lengths || $PART == all ]]; then
  OUT=$OUT python3 "$HERE/anchor/hf_anchor_lengths.py" "${SHAPES[@]}"
fi
if [[ $PART == parity || $PART == all ]]; then
  # Reference model folder and values from transformers, then Anneal in fp32 and bf16 on the same
  # weights and batches, then the comparison (exit status 1 when a check fails).
  python3 "$HERE/parity/hf_parity.py" "$OUT"
  for dtype in float32 bfloat16; do
    "$HERE/Anneal.Bench" parity --device cuda --model-dir "$OUT/parity_model" --reference "$OUT/parity_reference.json" \
      --dtype "$dtype" --json "$OUT/anneal_parity_$dtype.json" 2>>"$OUT/anneal_parity.stderr" | tail -1
  done
  python3 "$HERE/parity/compare_parity.py" "$OUT/parity_reference.json" "$OUT/anneal_parity_float32.json" \
    "$OUT/anneal_parity_bfloat16.json" | tee "$OUT/parity.md" || PARITY_FAILED=1
fi
if [[ $PART == vl-parity ]]; then
  python3 "$HERE/parity/hf_vl_parity.py" "$OUT"
  for dtype in float32 bfloat16; do
    "$HERE/Anneal.Bench" vl-parity --device cuda --reference "$OUT/vl_parity_reference.json" \
      --dtype "$dtype" --json "$OUT/anneal_vl_parity_$dtype.json" 2>>"$OUT/anneal_vl_parity.stderr" | tail -1
  done
  python3 "$HERE/parity/compare_vl_parity.py" "$OUT/vl_parity_reference.json" "$OUT/anneal_vl_parity_float32.json" \
    "$OUT/anneal_vl_parity_bfloat16.json" | tee "$OUT/vl_parity.md" || PARITY_FAILED=1
fi
if [[ $PART == table || $PART == all ]]; then
  python3 "$HERE/compare.py" "$OUT/anneal.jsonl" "$OUT/hf_anchor.json" \
    --lengths "$OUT/anneal_lengths.jsonl" "$OUT/hf_anchor_lengths.json" | tee "$OUT/table.md"
fi
if [[ $PART == qlora ]]; then
  # bf16 base + LoRA against NF4 base + LoRA (r=16 on all linears), same process, alternating; then
  # whole steps (micro 4 × 2048) of each mode in its own process. Target: ≤ 1.3× LoRA's time.
  rm -f "$OUT/qlora_steps.jsonl"
  { "$HERE/Anneal.Bench" qlora-layer --device cuda --shape qwen3-8b --tokens 8192 --steps 10
    for mode in lora qlora; do
      "$HERE/Anneal.Bench" train --device cuda --shape qwen3-1.7b --mode "$mode" --micro 4 --seq 2048 --steps 4 \
        --json "$OUT/qlora_steps.jsonl" | tail -1
    done; } 2>>"$OUT/qlora.stderr" | tee "$OUT/qlora.md"
fi
if [[ $PART == nccl ]]; then
  # One GPU cannot hold two NCCL ranks (NCCL refuses a duplicate device), so the multi-rank path is
  # checked here as a world of one: ANNEAL_WORLD_SIZE=1 ANNEAL_COLLECTIVES=nccl puts the single rank
  # through DataParallel.Join → NcclCollectives (unique id through the job folder, cudaSetDevice,
  # ncclCommInitRank), the broadcast of the initial weights, the per-step agreement on stopping,
  # and FlatAdamW's all-reduce (replicated) or reduce-scatter + all-gather (ZeRO-1) of the flat
  # buffers. A sum over one rank changes nothing: the losses must equal the plain run's (a second
  # plain run gives the device's own run-to-run noise). Step time: wall time between progress events.
  NCCL_WORK=$(mktemp -d) python3 - "$HERE/anneal" "$OUT" <<'PY' || NCCL_FAILED=1
import json, os, statistics, subprocess, sys, threading, time
anneal, out = sys.argv[1], sys.argv[2]
work = os.environ["NCCL_WORK"]
facts = [("What is the capital of France?", "Paris is the capital of France."), ("What colour is the sky?", "The sky is blue."),
         ("How many legs does a cat have?", "A cat has four legs."), ("What do bees make?", "Bees make honey."),
         ("What is two plus two?", "Two plus two is four."), ("Which animal barks?", "A dog barks."),
         ("What melts ice?", "Heat melts ice."), ("Where do fish live?", "Fish live in water.")]
data = os.path.join(work, "train.jsonl")
with open(data, "w") as f:
    for _ in range(16):
        for q, a in facts:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")
STEPS, TOL = 30, 1e-3
full = {"mode": "full_finetune", "total_steps": STEPS, "per_device_batch": 4, "gradient_accumulation_steps": 2,
        "learning_rate": 1e-3, "seed": 7, "sequence_length": 64, "save_steps": 1000}
lora = dict(full, mode="lora", learning_rate=5e-3, lora={"r": 4, "alpha": 8})
nccl = {"ANNEAL_WORLD_SIZE": "1", "ANNEAL_RANK": "0", "ANNEAL_LOCAL_RANK": "0", "ANNEAL_COLLECTIVES": "nccl"}
runs = [("full, plain", full, {}), ("full, plain again", full, {}),
        ("full, nccl ZeRO-1", full, nccl), ("full, nccl replicated", full, dict(nccl, ANNEAL_ZERO1="off")),
        ("lora, plain", lora, {}), ("lora, nccl", lora, nccl)]
results = {}
for name, settings, env in runs:
    slug = name.replace(", ", "-").replace(" ", "-")
    spec = {"job_id": "job_nccl_check", "model": "anneal/tiny-qwen3", "model_path": os.path.join(work, "tiny-qwen3"),
            "training_file": data, "validation_file": None, "output_dir": os.path.join(work, slug), "settings": settings, "device": "cuda"}
    path = os.path.join(work, slug + ".json")
    with open(path, "w") as f:
        json.dump(spec, f)
    losses, stamps, failed, start = [], [], None, time.monotonic()
    with open(os.path.join(out, "nccl.stderr"), "a") as log:
        log.write(f"== {name}\n"); log.flush()
        p = subprocess.Popen([anneal, "trainer", "run", "--spec", path], stdout=subprocess.PIPE, stderr=log, text=True,
                             env=dict(os.environ, **env))
        guard = threading.Timer(150, p.kill)   # a hung collective must not hold the part past its budget
        guard.start()
        for line in p.stdout:
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            if e["type"] == "sft.progress":
                losses.append(e["data"]["loss"]); stamps.append(time.monotonic())
            elif e["type"] == "sft.failed":
                failed = e["message"] + ": " + json.dumps(e.get("data"))
        p.wait()
        guard.cancel()
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:])]   # steps 4.. (the first steps warm up)
    results[name] = {"losses": losses, "exit": p.returncode, "failed": failed, "seconds": time.monotonic() - start,
                     "step_ms": 1000 * statistics.median(gaps) if gaps else None}
def diff(a, b):
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))
rows, ok = [], True
for name, ref in [("full, plain again", "full, plain"), ("full, nccl ZeRO-1", "full, plain"),
                  ("full, nccl replicated", "full, plain"), ("lora, nccl", "lora, plain")]:
    r, b = results[name], results[ref]
    d = diff(b["losses"], r["losses"])
    passed = r["exit"] == 0 and b["exit"] == 0 and d <= TOL
    ok &= passed
    rows.append((name, ref, d, b["step_ms"], r["step_ms"], passed, r["failed"] or b["failed"]))
lines = ["| run | against | worst relative loss difference | step ms (against) | step ms (run) | step time Δ | result |", "|---|---|---|---|---|---|---|"]
for name, ref, d, ms_ref, ms, passed, failed in rows:
    delta = f"{(ms - ms_ref):+.1f} ms ({(ms / ms_ref - 1) * 100:+.0f} %)" if ms and ms_ref else "—"
    ms_text = lambda v: f"{v:.1f}" if v else "—"
    lines.append(f"| {name} | {ref} | {d:.2e} | {ms_text(ms_ref)} | {ms_text(ms)} | {delta} | {'ok' if passed else 'FAILED' + (': ' + failed if failed else '')} |")
lines.append(f"{'PASSED' if ok else 'FAILED'}: {STEPS} steps of the tiny model (per_device_batch 4 × accumulation 2, sequence_length 64) per run; "
             f"tolerance {TOL:.0e} relative; step time = median wall time between progress events from step 4")
report = "\n".join(lines)
print(report)
with open(os.path.join(out, "nccl.md"), "w") as f:
    f.write(report + "\n")
with open(os.path.join(out, "nccl.json"), "w") as f:
    json.dump(results, f, indent=1)
sys.exit(0 if ok else 1)
PY
fi
[[ -z ${NCCL_FAILED:-} ]] || echo "NCCL check FAILED (see $OUT/nccl.md and nccl.stderr)" >&2
if [[ $PART == serve ]]; then
  # bench/README.md, "Serving": the CPU table's two settings, on the GPU; then longer answers, where
  # the decode steps (batched or not) dominate. Each line a separate process; tables in serve.md.
  { "$HERE/Anneal.ServeBench" --device cuda --shape 100m --streams 8 --tokens 32
    "$HERE/Anneal.ServeBench" --device cuda --shape 100m --streams 8 --tokens 64 --prompt-words 6
    "$HERE/Anneal.ServeBench" --device cuda --shape 100m --streams 8 --tokens 256 --prompt-words 6; } 2>>"$OUT/serve.stderr" | tee "$OUT/serve.md"
fi
[[ -z ${DEVICE_CHECK_FAILED:-} ]] || echo "device check FAILED (see $OUT/device-check.md)" >&2
[[ -z ${PARITY_FAILED:-} ]] || echo "parity checks FAILED (see $OUT/parity.md)" >&2
[[ -z ${DEVICE_CHECK_FAILED:-}${PARITY_FAILED:-}${NCCL_FAILED:-} ]] || exit 1
