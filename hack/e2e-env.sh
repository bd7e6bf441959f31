# Sourced by hack/e2e.sh and hack/node-bench.sh: installs and builds what the end-to-end bed
# runs (Debian packages, Kubernetes binaries, helm, bin/webhook, pullgate's image as an OCI
# layout, the pause binary) unless a PULLGATE_E2E_* variable names it, and exports them all.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/hack/deps.sh" e2e
PULLGATE_E2E_KUBE_DIR=${PULLGATE_E2E_KUBE_DIR:-$("$root/hack/kube-binaries.sh" | tail -n1)}
PULLGATE_E2E_HELM=${PULLGATE_E2E_HELM:-$("$root/hack/helm.sh")}
if [[ -z ${PULLGATE_E2E_WEBHOOK:-} ]]; then
  ${MAKE:-make} -C "$root" --no-print-directory build >&2
  PULLGATE_E2E_WEBHOOK=$root/bin/webhook
fi
# pullgate's own image: the node suite pushes it and installs the chart with it.
if [[ -z ${PULLGATE_E2E_IMAGE:-} ]]; then
  OUT=$root/_out "$root/hack/image.sh" >&2
  PULLGATE_E2E_IMAGE=$root/_out/image
fi
if [[ -z ${PULLGATE_E2E_PAUSE:-} ]]; then
  (cd "$root/test" && CGO_ENABLED=0 ${GO:-go} build -trimpath -o "$root/_out/pause" ./e2e/pause)
  PULLGATE_E2E_PAUSE=$root/_out/pause
fi
PULLGATE_E2E_ETCD=${PULLGATE_E2E_ETCD:-$(command -v etcd)}
PULLGATE_E2E_REGISTRY=${PULLGATE_E2E_REGISTRY:-$(command -v docker-registry)}
# The node's mirror: Distribution v3 (the API-server suite keeps Debian's 2.8 as its mirror).
PULLGATE_E2E_MIRROR_REGISTRY=${PULLGATE_E2E_MIRROR_REGISTRY:-$("$root/hack/registry-v3.sh")}
export PULLGATE_E2E_KUBE_DIR PULLGATE_E2E_ETCD PULLGATE_E2E_REGISTRY PULLGATE_E2E_WEBHOOK \
  PULLGATE_E2E_IMAGE PULLGATE_E2E_HELM PULLGATE_E2E_PAUSE PULLGATE_E2E_MIRROR_REGISTRY
