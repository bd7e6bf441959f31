#!/usr/bin/env bash
# Installs the Debian packages the tests start as real servers, when their binaries are missing.
#   hack/deps.sh test   docker-registry (the pull-through mirror in pkg/resolve's tests)
#   hack/deps.sh e2e    the above plus etcd-server
set -euo pipefail

want=(docker-registry:docker-registry)
[[ ${1:-test} == e2e ]] && want+=(etcd:etcd-server)

missing=()
for pair in "${want[@]}"; do
  bin=${pair%%:*} pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) != 0 ]]; then
  echo "deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# --no-install-recommends keeps the registry's and etcd's system services out of the way: the
# tests start their own instances on free loopback ports.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
