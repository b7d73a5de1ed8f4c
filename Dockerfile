# Multi-stage build of a static leproxy binary on a minimal, non-root image.
#
#   docker build -t leproxy .
#   docker run -d --name leproxy -p 80:8080 -p 443:8443 -p 443:8443/udp \
#     -v /etc/leproxy:/etc/leproxy:ro -v leproxy-cache:/var/cache/leproxy leproxy
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/leproxy . \
 && mkdir -p /out/cache && chown 65532:65532 /out/cache && chmod 0700 /out/cache

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/leproxy /usr/local/bin/leproxy
COPY --from=build --chown=65532:65532 /out/cache /var/cache/leproxy
USER 65532:65532
VOLUME ["/var/cache/leproxy"]
# Unprivileged ports inside the container; publish them as 443 (TCP and
# UDP, for HTTP/3) and 80. Alt-Svc announces HTTP/3 on the published 443.
EXPOSE 8443 8443/udp 8080
ENTRYPOINT ["/usr/local/bin/leproxy", "-cache", "/var/cache/leproxy", "-addr", ":8443", "-h3-port", "443", "-http", ":8080", "-admin", "127.0.0.1:9090"]
# Healthy when every listener serves and every mapped name has a valid
# certificate; the image has no curl, leproxy probes itself.
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
  CMD ["/usr/local/bin/leproxy", "-probe", "http://127.0.0.1:9090/health/ready"]
CMD ["-map", "/etc/leproxy/mapping.yml"]
