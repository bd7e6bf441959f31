#!/usr/bin/env bash
# Builds the webhook image without a Docker engine: the webhook and the pre-pull sleeper for
# linux/$GOARCH (hack/build.sh, as the Dockerfile builds them), then hack/image
# (go-containerregistry) lays them on an empty base and writes an OCI layout to $OUT/image. With IMAGE=host/repo:tag it also pushes there (plain HTTP for 127.0.0.1 and
# localhost; INSECURE=1 for other hosts).
#
#   make image                                   # -> _out/image
#   make image IMAGE=127.0.0.1:5000/pullgate:dev # and push
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/_out}
goarch=${GOARCH:-$(go env GOARCH)}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}

mkdir -p "$out"
bin=$out/webhook-linux-$goarch
GOOS=linux GOARCH=$goarch ./hack/build.sh "$bin" "$version"
sleeper=$out/sleeper-linux-$goarch
GOOS=linux GOARCH=$goarch ./hack/build.sh "$sleeper" "$version" ./cmd/sleeper

args=(-binary "$bin" -sleeper "$sleeper" -out "$out/image" -platform "linux/$goarch" -version "$version" -revision "$revision")
if [[ -n ${IMAGE:-} ]]; then
  args+=(-push "$IMAGE")
fi
if [[ -n ${INSECURE:-} ]]; then
  args+=(-insecure)
fi
go run ./hack/image "${args[@]}"
