#!/usr/bin/env bash
# Builds bundle/anneal-gpu.tar.xz: the `anneal` command and the benchmark programs (training, serving), self-contained for
# linux-x64 and without libtorch (-p:AnnealGpu=true drops the libtorch-cpu package; at run time
# NativeLibraries takes libtorch from ANNEAL_LIBTORCH_DIR or the installed PyTorch), plus run-gpu.sh,
# compare.py, the anchor scripts and the parity scripts. Run from anywhere; bundle/ is not committed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/bundle/anneal-gpu
rm -rf "$DIR" && mkdir -p "$DIR"
for project in src/Anneal.Cli bench/Anneal.Bench bench/Anneal.ServeBench; do
  dotnet publish "$ROOT/$project" -c Release -r linux-x64 --self-contained true \
    -p:AnnealGpu=true -p:InvariantGlobalization=true -o "$DIR"
done
# No libtorch may ride along: the GPU machine's PyTorch provides it (CUDA build).
if ls "$DIR"/libtorch_cpu.so >/dev/null 2>&1; then echo "libtorch_cpu.so was published; AnnealGpu did not apply" >&2; exit 1; fi
cp "$ROOT/bench/run-gpu.sh" "$ROOT/bench/compare.py" "$DIR/"
mkdir -p "$DIR/anchor" && cp "$ROOT"/bench/anchor/*.py "$DIR/anchor/"
mkdir -p "$DIR/parity" && cp "$ROOT"/bench/parity/*.py "$DIR/parity/"
tar -C "$ROOT/bundle" -cJf "$ROOT/bundle/anneal-gpu.tar.xz" anneal-gpu
ls -l "$ROOT/bundle/anneal-gpu.tar.xz"
