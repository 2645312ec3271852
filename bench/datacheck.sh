#!/usr/bin/env bash
# Dataset validation benchmark (bench/README.md, "Dataset validation"): generates chat JSONL files
# of 30 MB and 300 MB (and 3 GB with --with-3gb) deterministically, then validates each, one after
# another in the same run, with
#   streaming-check     DatasetValidator.Validate in-process (Core's DatasetCheck)   Anneal.DataBench
#   document-per-line   the per-line JsonDocument validator it replaced               Anneal.DataBench --by-document
#   anneal files check  the CLI, a whole process start to end
#   python json.loads   bench/datacheck/validate_upstream.py
# Each is a separate process timed by /usr/bin/time (wall, user+sys CPU, peak RSS); the in-process
# seconds each tool reports for the validation alone are shown beside. Prints a Markdown table.
# usage: bench/datacheck.sh [--with-3gb]      (files go to $DATACHECK_DIR, default /tmp/anneal-datacheck)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DATACHECK_DIR:-/tmp/anneal-datacheck}
sizes="30 300"
[ "${1:-}" = "--with-3gb" ] && sizes="30 300 3000"
mkdir -p "$dir"
export MSBUILDDISABLENODEREUSE=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
dotnet build bench/Anneal.DataBench -c Release -v q -nologo >/dev/null
dotnet build src/Anneal.Cli -c Release -v q -nologo >/dev/null
bench=bench/Anneal.DataBench/bin/Release/net10.0/Anneal.DataBench
cli="dotnet src/Anneal.Cli/bin/Release/net10.0/anneal.dll"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| file | validator | wall s | MB/s (wall) | CPU s | MB per CPU s | in-process s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for mb in $sizes; do
  file="$dir/chat-${mb}mb.jsonl"
  [ -f "$file" ] || "$bench" generate --mb "$mb" --out "$file" >/dev/null
  bytes=$(stat -c %s "$file")
  cat "$file" >/dev/null # every run reads from the page cache
  run() { # name, command...: one table row
    local name=$1; shift
    local out
    out=$( { /usr/bin/time -f "TIME %e %U %S %M" "$@" 2>&1 1>&3 | grep '^TIME' ; } 3>&1 )
    local inproc wall user sys rss
    inproc=$(echo "$out" | grep -v '^TIME' | awk '{print $4}' | head -1)
    read -r _ wall user sys rss <<<"$(echo "$out" | grep '^TIME')"
    awk -v n="$name" -v mb="$mb" -v b="$bytes" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v i="${inproc:--}" 'BEGIN {
      cpu = u + s; printf "| %s MB | %s | %.2f | %.0f | %.2f | %.0f | %s | %.0f |\n", mb, n, w, b / 1e6 / w, cpu, (cpu > 0 ? b / 1e6 / cpu : 0), i, r / 1024 }'
  }
  run "streaming-check (in-process)" "$bench" validate "$file"
  run "document-per-line (before)" "$bench" validate "$file" --by-document
  run "anneal files check" $cli files check "$file"
  run "python json.loads" python3 bench/datacheck/validate_upstream.py "$file"
done
