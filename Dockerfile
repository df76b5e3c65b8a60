# syntax=docker/dockerfile:1
# Outpost container image: a static binary on a minimal, non-root base.
#
#   make image                      # docker build with VERSION, COMMIT and the OCI labels set
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 .   # multi-arch
#
# The build stage runs on the builder's own platform and cross-compiles (CGO_ENABLED=0), so a
# multi-arch build needs no emulation (BuildKit, the default builder since Docker 23, sets
# BUILDPLATFORM; the legacy builder, DOCKER_BUILDKIT=0, builds on linux/amd64 only). The
# runtime base has no shell, curl or wget: the HEALTHCHECK is the binary's own
# `outpost healthcheck`, a GET of /readyz.

ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=${BUILDPLATFORM:-linux/amd64} ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
RUN variant="${TARGETVARIANT#v}" \
 && export CGO_ENABLED=0 GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-amd64}" GOARM="${variant:-7}" \
 && go build -trimpath \
      -ldflags "-s -w -X github.com/outpost-registry/outpost/internal/version.Version=${VERSION} -X github.com/outpost-registry/outpost/internal/version.Commit=${COMMIT}" \
      -o /out/outpost ./cmd/outpost \
 && (cd cmd/outpost-legacy-deflate && go build -trimpath -ldflags "-s -w" -o /out/outpost-legacy-deflate . \
     && go build -modfile=klauspost1.15.mod -trimpath -ldflags "-s -w" -o /out/outpost-legacy-deflate-klauspost1.15 .) \
 && mkdir -p /out/data

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG COMMIT=unknown
ARG SOURCE=https://github.com/outpost-registry/outpost
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="outpost" \
      org.opencontainers.image.description="Outpost: a connected OCI registry for the edge (IoT Edge module, behind the IoT Edge API proxy)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/outpost /outpost
COPY --from=build /out/outpost-legacy-deflate /outpost-legacy-deflate
COPY --from=build /out/outpost-legacy-deflate-klauspost1.15 /outpost-legacy-deflate-klauspost1.15
COPY --from=build --chown=65532:65532 /out/data /var/acr/data
ENV OUTPOST_DATADIR=/var/acr/data \
    OUTPOST_LOG_FORMAT=json
VOLUME /var/acr/data
EXPOSE 8080
USER 65532:65532
# GET http://127.0.0.1:8080/readyz (the port of OUTPOST_ADDR when set); exit 0 healthy, 1 not.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["/outpost", "healthcheck"]
ENTRYPOINT ["/outpost"]
CMD ["serve"]
