#!/usr/bin/env bash
# Prints the path of Distribution v3's registry, built with `go install` on first use and cached
# outside the checkout, keyed by version. The node bed runs it as its pull-through mirror: the
# release users deploy today, and unlike Debian's 2.8 it fetches a cold blob from its upstream
# once (2.8 fetches it twice: once to answer, once to store).
set -euo pipefail
version=${DISTRIBUTION_VERSION:-v3.1.2}
dir=${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}/tools/distribution-$version
if [[ ! -x $dir/registry ]]; then
  echo "installing distribution $version into $dir" >&2
  tmp=$(mktemp -d)
  GOBIN=$tmp CGO_ENABLED=0 go install "github.com/distribution/distribution/v3/cmd/registry@$version" >&2
  mkdir -p "$dir"
  mv "$tmp/registry" "$dir/registry"
  rmdir "$tmp"
fi
echo "$dir/registry"
