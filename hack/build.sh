#!/usr/bin/env sh
# Builds pullgate's binaries: static (CGO off, so they run on distroless/static and in any
# pre-pulled image), -trimpath and no VCS stamp (the same source gives the same bytes, in a
# checkout or a Docker context without .git), stripped, with the version in main.version.
# `make build`, hack/image.sh and the Dockerfile all run this script, so the three cannot drift
# apart.
#
#   hack/build.sh OUT [VERSION [PACKAGE]]   PACKAGE: ./cmd/webhook (default) or ./cmd/sleeper;
#                                           GOOS and GOARCH from the environment; GO picks the go command
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUT [VERSION [PACKAGE]]" >&2; exit 2; }
out=$1
version=${2:-dev}
pkg=${3:-./cmd/webhook}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 exec "${GO:-go}" build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=$version" -o "$out" "$pkg"
