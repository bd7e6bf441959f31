#!/usr/bin/env bash
# Load test (test/load): the real bin/webhook over HTTPS under vegeta, against go-containerregistry's
# registry playing the mirror, next to a trivial webhook (the floor). Prints one table.
#
# Builds bin/webhook when it is missing (`make loadtest` has just built it). Arguments go to the
# load program: `hack/loadtest.sh -smoke` (about a second per scenario, for CI),
# `hack/loadtest.sh -duration 30s -concurrency 32`, `hack/loadtest.sh -only warm -warming`
# (admission while a large image is warmed on the same machine), `hack/loadtest.sh -h` for the flags.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x bin/webhook ]]; then
  ${MAKE:-make} --no-print-directory build >&2
fi
cd test
exec ${GO:-go} run ./load -webhook ../bin/webhook "$@"
