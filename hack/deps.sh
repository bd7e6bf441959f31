#!/usr/bin/env bash
# Installs the Debian packages the tests start as real servers, when their binaries are missing.
#   hack/deps.sh test   docker-registry (the pull-through mirror in pkg/resolve's tests)
#   hack/deps.sh e2e    the above, etcd-server, and the node: containerd, runc, the CNI plugins,
#                       iptables (kube-proxy, inside the suite's own network namespace),
#                       iproute2 and a static busybox for test images
set -euo pipefail

want=(docker-registry:docker-registry)
if [[ ${1:-test} == e2e ]]; then
  want+=(etcd:etcd-server containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins
    iptables:iptables ip:iproute2 busybox:busybox-static)
fi

missing=()
for pair in "${want[@]}"; do
  bin=${pair%%:*} pkg=${pair#*:}
  if [[ $bin == /* ]]; then [[ -x $bin ]] && continue; else command -v "$bin" >/dev/null 2>&1 && continue; fi
  missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) != 0 ]]; then
  echo "deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# --no-install-recommends keeps the packages' system services out of the way: the tests start
# their own instances (on loopback, or inside their own network namespace).
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
