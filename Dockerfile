# syntax=docker/dockerfile:1
# Multi-platform build of a static leproxy binary on an empty, non-root image.
#
#   docker build -t leproxy .
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t leproxy .
#   docker run -d --name leproxy -p 80:8080 -p 443:8443 -p 443:8443/udp \
#     -v /etc/leproxy:/etc/leproxy:ro -v leproxy-cache:/var/cache/leproxy leproxy
#
# The admin endpoints (/health/live, /health/ready, /metrics, /certificates)
# listen on 127.0.0.1:9090 inside the container, where HEALTHCHECK reaches
# them. To scrape them from the host, bind them on every interface of the
# container and publish the port on the host's loopback only:
#
#   docker run ... -p 127.0.0.1:9090:9090 leproxy -map /etc/leproxy/mapping.yml -admin :9090
#
# Base images are pinned by exact version tag. Pin them by digest as well
# (golang:1.26.8-bookworm@sha256:...) where the registry can be reached:
# digests could not be looked up where this file was written.

# The build stage runs on the builder's own platform and cross-compiles
# (CGO_ENABLED=0) for the target one: no emulation for arm64 or arm/v7.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS TARGETARCH TARGETVARIANT
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN GOARM="${TARGETVARIANT#v}" CGO_ENABLED=0 GOOS="$TARGETOS" GOARCH="$TARGETARCH" \
    go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION} -X main.buildCommit=${COMMIT}" -o /out/leproxy . \
 && mkdir -p /out/cache && chown 65532:65532 /out/cache && chmod 0700 /out/cache

# scratch: nothing but the binary and the CA bundle (for ACME servers and
# https:// backends) taken from the pinned build image.
FROM scratch
ARG VERSION=devel
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="leproxy" \
      org.opencontainers.image.description="TLS with automatic certificates for web apps and databases" \
      org.opencontainers.image.source="https://github.com/leproxy/leproxy" \
      org.opencontainers.image.url="https://github.com/leproxy/leproxy" \
      org.opencontainers.image.documentation="https://github.com/leproxy/leproxy#install" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="scratch"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/leproxy /usr/local/bin/leproxy
COPY --from=build --chown=65532:65532 /out/cache /var/cache/leproxy
USER 65532:65532
VOLUME ["/var/cache/leproxy"]
# Unprivileged ports inside the container; publish them as 443 (TCP and
# UDP, for HTTP/3) and 80. Alt-Svc announces HTTP/3 on the published 443.
# 9090 is the admin port, on the container's loopback unless -admin :9090
# is given (see above); publish it on the host's loopback only.
EXPOSE 8443 8443/udp 8080 9090
ENTRYPOINT ["/usr/local/bin/leproxy", "-cache", "/var/cache/leproxy", "-addr", ":8443", "-h3-port", "443", "-http", ":8080", "-admin", "127.0.0.1:9090"]
# Liveness, not readiness: a name whose DNS does not point here yet makes
# /health/ready fail, and restarting the container would not fix it. The
# image has no curl: leproxy probes itself.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/leproxy", "-probe", "http://127.0.0.1:9090/health/live"]
CMD ["-map", "/etc/leproxy/mapping.yml"]
