#!/usr/bin/env bash
# Runs the end-to-end suites:
#   test/e2e       a real kube-apiserver on etcd, registries, bin/webhook as a process (loopback)
#   test/e2e/node  a real node: the control plane, kubelet + containerd + runc, kube-proxy and a
#                  CNI bridge inside network, mount and PID namespaces of the suite's own (needs
#                  root), pullgate installed by its Helm chart from its own image (make image)
#
# Extra arguments go to `go test`, e.g. `hack/e2e.sh -run TestPodPullsFromMirror ./e2e/node`;
# without a package both suites run, one after the other.
#
# Environment: PULLGATE_E2E_{KUBE_DIR,ETCD,REGISTRY,WEBHOOK,IMAGE,HELM,PAUSE,BUSYBOX} name the
# binaries instead; PULLGATE_E2E_ARTIFACTS=dir puts logs there (default: a temp dir, removed when
# the suite passes); PULLGATE_E2E_KEEP=1 keeps them on success too.
set -euo pipefail
cd "$(dirname "$0")/.."
began=$(date +%s)

source hack/e2e-env.sh

pkgs=()
for a in "$@"; do [[ $a == ./* ]] && pkgs+=("$a"); done
args=()
for a in "$@"; do [[ $a == ./* ]] || args+=("$a"); done
((${#pkgs[@]})) || pkgs=(./e2e ./e2e/node)

status=0
# -p 1: each package starts a cluster of its own; two at once would share two cores.
(cd test && ${GO:-go} test -tags e2e -count=1 -p 1 -v -timeout 40m "${pkgs[@]}" "${args[@]}") || status=$?
echo "e2e: wall time $(($(date +%s) - began))s (including builds)" >&2
exit "$status"
