#!/usr/bin/env bash
# Upload to `ready` on a real server (bench/README.md, "Dataset validation"): starts `anneal serve`
# on a fresh data folder, uploads FILE with curl as Synth's client does (multipart, purpose
# fine-tune), then polls GET /api/learning/files/{id} every 50 ms until the status is not
# `processing`. Prints the upload's HTTP status and seconds, and the seconds until the file was
# ready (after one small warm-up upload). Give another build's anneal.dll as the second argument to time it the same way.
# usage: bench/datacheck-upload.sh FILE [path/to/anneal.dll]
set -euo pipefail
file=$1
dll=${2:-$(cd "$(dirname "$0")/.." && pwd)/src/Anneal.Cli/bin/Release/net10.0/anneal.dll}
data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
dotnet "$dll" serve --data-dir "$data" --urls "http://127.0.0.1:$port" >"$data/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 120); do grep -q "ank_" "$data/serve.log" 2>/dev/null && break; sleep 0.5; done
key=$(grep -o "ank_[A-Za-z0-9_-]*" "$data/serve.log" | head -1)
api="http://127.0.0.1:$port/api/learning/files"
# Warm-up: one small upload first, so neither server is timed on its first request's start-up.
head -n 200 "$file" >"$data/warmup.jsonl"
curl -s -o /dev/null -H "Authorization: Bearer $key" -F purpose=fine-tune -F "file=@$data/warmup.jsonl" "$api"
sleep 2
start=$(date +%s.%N)
read -r code upload < <(curl -s -o "$data/response.json" -w "%{http_code} %{time_total}\n" \
  -H "Authorization: Bearer $key" -F purpose=fine-tune -F "file=@$file;filename=$(basename "$file")" "$api")
id=$(grep -o '"id":"file_[a-z0-9]*"' "$data/response.json" | cut -d'"' -f4 || true)
status=$(grep -o '"status":"[a-z]*"' "$data/response.json" | cut -d'"' -f4 || true)
while [ "$status" = "processing" ]; do
  sleep 0.05
  status=$(curl -s -H "Authorization: Bearer $key" "$api/$id" | grep -o '"status":"[a-z]*"' | cut -d'"' -f4)
done
ready=$(echo "$(date +%s.%N) - $start" | bc)
echo "$(basename "$dll" .dll) $(stat -c %s "$file") bytes: HTTP $code in ${upload}s, status $status after ${ready}s"
