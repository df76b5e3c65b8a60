# Outpost container image: a static binary on a minimal base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/outpost-registry/outpost/internal/version.Version=${VERSION} -X github.com/outpost-registry/outpost/internal/version.Commit=${COMMIT}" \
      -o /out/outpost ./cmd/outpost \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outpost /outpost
COPY --from=build --chown=65532:65532 /out/data /var/acr/data
ENV OUTPOST_DATADIR=/var/acr/data \
    OUTPOST_LOG_FORMAT=json
VOLUME /var/acr/data
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/outpost"]
CMD ["serve"]
