# syntax=docker/dockerfile:1
# shardproxy and partman in one small image.
#   docker build -t shardproxy .
# The builder and the final image are both Debian bookworm, so the cgo
# binaries (pg_query_go needs cgo) find the glibc they were linked against.

FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=1
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/shardproxy ./cmd/partman

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home shardproxy
COPY --from=build /out/shardproxy /out/partman /usr/local/bin/
COPY delivery/example.yaml /etc/shardproxy/shardproxy.yaml
USER shardproxy
# 6432: Postgres protocol; 9930: admin (/metrics, /health, /ready).
EXPOSE 6432 9930
CMD ["shardproxy", "-config", "/etc/shardproxy/shardproxy.yaml"]
