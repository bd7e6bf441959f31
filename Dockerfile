# syntax=docker/dockerfile:1
# The pullgate webhook image. `make image` assembles the same image without a Docker engine
# (hack/image.sh); keep the two in step: static binaries at /webhook and /sleeper (the pre-pull
# containers' process), user 65532:65532, these labels.

# The builder runs on the build host's platform and cross-compiles, which is much faster than
# emulating the target architecture.
# The Go release the Makefile builds with (GOTOOLCHAIN there).
FROM --platform=$BUILDPLATFORM golang:1.27.3 AS build
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
# Every package directory the binary imports (test/image's TestDockerContext checks it).
COPY hack/build.sh hack/
COPY cmd/ cmd/
COPY internal/ internal/
COPY pkg/ pkg/
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
# The build flags live in hack/build.sh, which make build and make image run too.
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH hack/build.sh /out/webhook "${VERSION}" && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH hack/build.sh /out/sleeper "${VERSION}" ./cmd/sleeper

# distroless/static:nonroot carries CA certificates (registries are called over TLS) and the
# nonroot user, and nothing else: no shell, no package manager. Pinned by digest so a rebuild of
# the same commit gets the same base; bump the digest deliberately.
FROM gcr.io/distroless/static:nonroot@sha256:f7f8f729987ad0fdf6b05eeeae94b26e6a0f613bdf46feea7fc40f7bd72953e6
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/pullgate/pullgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/webhook /webhook
COPY --from=build /out/sleeper /sleeper
USER 65532:65532
ENTRYPOINT ["/webhook"]
