#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e): a real kube-apiserver on etcd, go-containerregistry's
# registry as upstream, Distribution as pull-through mirror, and bin/webhook.
#
# Needs: kube-apiserver/kubectl (built and cached by hack/kube-binaries.sh), etcd and
# docker-registry (Debian packages etcd-server and docker-registry, installed here when missing
# and we are root). Extra arguments go to `go test`, e.g. `hack/e2e.sh -run TestEnforce`.
#
# Environment: PULLGATE_E2E_{KUBE_DIR,ETCD,REGISTRY,WEBHOOK} name the binaries instead;
# PULLGATE_E2E_ARTIFACTS=dir puts logs there (default: a temp dir, removed when the suite passes);
# PULLGATE_E2E_KEEP=1 keeps them on success too.
set -euo pipefail
cd "$(dirname "$0")/.."

began=$(date +%s)

# Each binary can be given through its PULLGATE_E2E_* variable instead.
PULLGATE_E2E_KUBE_DIR=${PULLGATE_E2E_KUBE_DIR:-$(./hack/kube-binaries.sh | tail -n1)}

need=()
[[ -n ${PULLGATE_E2E_ETCD:-} ]] || command -v etcd >/dev/null || need+=(etcd-server)
[[ -n ${PULLGATE_E2E_REGISTRY:-} ]] || command -v docker-registry >/dev/null || need+=(docker-registry)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "e2e: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2; }
  else
    echo "e2e: missing ${need[*]}: install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

# `make e2e` has just built it; running this script alone builds it the same way.
if [[ -z ${PULLGATE_E2E_WEBHOOK:-} ]]; then
  ${MAKE:-make} --no-print-directory build >&2
  PULLGATE_E2E_WEBHOOK=$PWD/bin/webhook
fi

PULLGATE_E2E_ETCD=${PULLGATE_E2E_ETCD:-$(command -v etcd)}
PULLGATE_E2E_REGISTRY=${PULLGATE_E2E_REGISTRY:-$(command -v docker-registry)}
export PULLGATE_E2E_KUBE_DIR PULLGATE_E2E_ETCD PULLGATE_E2E_REGISTRY PULLGATE_E2E_WEBHOOK

status=0
(cd test && ${GO:-go} test -tags e2e -count=1 -v -timeout 30m ./e2e/... "$@") || status=$?
echo "e2e: wall time $(($(date +%s) - began))s (including builds)" >&2
exit "$status"
