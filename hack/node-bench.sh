#!/usr/bin/env bash
# The node benchmark (test/nodebench): pod start on a real node for a large image straight from
# a throttled remote registry, through pullgate + mirror (cold, warm), and already on the node.
# Needs root, like the node suite. Arguments go to the program: -size, -bandwidth, -rtt, -pods,
# -smoke, -keep, -o FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/e2e-env.sh
cd test
${GO:-go} build -o "$root/_out/nodebench" ./nodebench
exec "$root/_out/nodebench" "$@"
