#!/usr/bin/env bash
# Prints the path of a helm binary: helm from PATH, else one cached outside the checkout, built
# with `go install` on first use (the module proxy is the one download source CI has).
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.22.0}
tools=${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}/tools
if helm=$(command -v helm); then
  echo "$helm"
  exit 0
fi
helm=$tools/helm-$HELM_VERSION
if [[ ! -x $helm ]]; then
  echo "installing helm $HELM_VERSION into $tools" >&2
  mkdir -p "$tools"
  tmp=$(mktemp -d)
  GOBIN=$tmp go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$helm"
  rmdir "$tmp"
fi
echo "$helm"
