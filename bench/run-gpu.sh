#!/usr/bin/env bash
# Runs Anneal's training-step benchmark and the Hugging Face anchor side by side on a GPU machine
# (no .NET needed: the bundle is self-contained) and prints one table. Usage, in the unpacked bundle:
#   ./run-gpu.sh [anneal|anchor|table|all]      (default all; results in $OUT, default ./results)
# Each part stays under 10 minutes on one H100; run them as separate commands where a time limit applies.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results}
PART=${1:-all}
mkdir -p "$OUT"

# libtorch from the installed PyTorch (NativeLibraries also finds it by itself; this makes it explicit).
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
export LD_LIBRARY_PATH=$TL:${LD_LIBRARY_PATH:-}
export ANNEAL_LIBTORCH_DIR=$TL
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

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
  # What the flat optimizer and the chunked loss each bring (TorchSharp's AdamW, full logits).
  bench --shape qwen3-0.6b --mode full --micro 4 --optimizer torch --loss plain
  bench --shape qwen3-0.6b --mode full --micro 4 --optimizer torch
  bench --shape qwen3-0.6b --mode full --micro 4 --loss plain
fi
if [[ $PART == anchor || $PART == all ]]; then
  OUT=$OUT python3 "$HERE/anchor/hf_anchor.py"
fi
if [[ $PART == table || $PART == all ]]; then
  python3 "$HERE/compare.py" "$OUT/anneal.jsonl" "$OUT/hf_anchor.json" | tee "$OUT/table.md"
fi
