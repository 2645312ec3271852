#!/usr/bin/env bash
# The memory model's estimate against the measured CPU peak, one process per row:
#   bench/memory-cpu.sh [out.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/memory-cpu.jsonl}
: > "$out"
dotnet build bench/Anneal.Bench -c Release -v q -nologo >/dev/null
# A fixed mmap threshold makes glibc return freed tensors to the system at once, so the peak
# resident set measures live memory rather than what the heap kept after earlier frees.
export MALLOC_MMAP_THRESHOLD_=65536
run() { dotnet bench/Anneal.Bench/bin/Release/net10.0/Anneal.Bench.dll memory --json "$out" "$@" | tail -1; }
run --shape small --micro 4 --seq 256
run --shape small --micro 4 --seq 256 --ckpt
run --shape 100m --micro 2 --seq 256
run --shape 100m --micro 2 --seq 256 --ckpt
run --shape 100m --micro 2 --seq 256 --mode lora
run --shape 100m --micro 2 --seq 256 --mode lora --ckpt
