#!/usr/bin/env bash
# Builds the Kubernetes binaries the end-to-end bed runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl) from the k8s.io/kubernetes Go module and caches
# them outside the checkout, keyed by version, so a fresh clone on the same machine reuses them.
#
# `go install k8s.io/kubernetes/...@vX` refuses because the module's go.mod replaces its staging
# modules with ./staging paths; a throwaway module that pins each staging module to the matching
# published v0.Y.Z gets the same source from the module proxy.
#
# Prints the directory holding the binaries on its last line.
set -euo pipefail
# The test servers are built with this machine's own Go (checked with go1.26.8), whatever the
# Makefile picks to build pullgate: make e2e calls this script with GOTOOLCHAIN set.
export GOTOOLCHAIN=${KUBE_GOTOOLCHAIN:-local}

version=${KUBE_VERSION:-v1.37.2}
staging=v0${version#v1}
cmds=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
dir=${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}/kube/$version
missing=()
for cmd in "${cmds[@]}"; do [[ -x $dir/$cmd ]] || missing+=("$cmd"); done
if ((${#missing[@]} == 0)); then
  echo "$dir"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >go.mod <<MOD
module kubebuild

go 1.26
MOD
go mod download -json "k8s.io/kubernetes@$version" >/dev/null
src=$(go env GOMODCACHE)/k8s.io/kubernetes@$version
{
  echo "require k8s.io/kubernetes $version"
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging"'#p' "$src/go.mod"
} >>go.mod
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for cmd in "${cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
  printf ')\n'
} >tools.go
go mod tidy >&2

ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$version")"
done
mkdir -p "$dir"
for cmd in "${missing[@]}"; do
  start=$SECONDS
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
  mv "$dir/$cmd.tmp" "$dir/$cmd"
  echo "kube-binaries: $cmd built in $((SECONDS - start)) s" >&2
done
echo "$dir"
