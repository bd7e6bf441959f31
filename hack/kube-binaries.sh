#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the k8s.io/kubernetes Go module and caches them outside
# the checkout, keyed by version, so a fresh clone on the same machine reuses them.
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
dir=${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}/kube/$version
if [[ -x $dir/kube-apiserver && -x $dir/kubectl ]]; then
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
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >&2

ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$version")"
done
mkdir -p "$dir.tmp"
for cmd in kube-apiserver kubectl; do
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
done
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
