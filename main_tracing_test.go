package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/leproxy/leproxy/internal/testenv"
	"github.com/leproxy/leproxy/internal/tracing/otlptest"
)

// clearOTELEnv empties the OTEL_* variables leproxy reads, for the test.
func clearOTELEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
}

// TestTracingEndToEnd runs leproxy with OTEL_EXPORTER_OTLP_ENDPOINT
// pointing at an in-process OTLP/HTTP receiver, an HTTPS host and a redis
// listener in front of a real redis-server with a password. A client's
// traceparent becomes the parent of leproxy's server span and reaches the
// backend with leproxy's client span as parent; the redis session makes
// one span with its protocol, bytes and end; stopping leproxy flushes the
// spans (the batch delay is left at its 5 s default, so only the stop's
// flush can have sent them); no span holds the query, the Authorization
// header or the redis password. An HTTP/3 request gets the same spans,
// with network.protocol.version 3.
func TestTracingEndToEnd(t *testing.T) {
	const redisPassword = "rpw-Kx9s3cret"
	clearOTELEnv(t)
	rcv := otlptest.StartHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "edge-proxy")
	redis := testenv.StartRedis(t, testenv.RedisOptions{Password: redisPassword})

	seen := make(chan http.Header, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backendSrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Clone():
		default:
		}
		io.WriteString(w, "ok")
	})}
	go backendSrv.Serve(ln)
	t.Cleanup(func() { backendSrv.Close() })

	redisPort := testenv.FreePort(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", fmt.Sprintf(`app.localhost: %s
tcp:
  - listen: 127.0.0.1:%d
    protocol: redis
    default: db.localhost
    routes:
      db.localhost: %s
`, ln.Addr(), redisPort, redis.Addr))
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	if !strings.Contains(d.log.String(), "tracing on") {
		t.Errorf("no start-up line says tracing is on:\n%s", d.log)
	}
	roots := loadPool(t, localRootFromLog(t, d.log.String()))

	const traceID, parentID = "5bf92f3577b34da6a3ce929d0e0e4736", "01f067aa0ba902b7"
	req, err := http.NewRequest(http.MethodGet, "https://app.localhost/orders?token=q-s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parentID+"-01")
	req.Header.Set("Authorization", "Bearer b-s3cret")
	resp, err := clientFor(addr, roots).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	backendHeader := <-seen

	// The same over HTTP/3: the same handler chain, so the same spans.
	waitLog(t, d, fmt.Sprintf("proto=h3 addr=%s", addr), 1)
	const h3TraceID = "6bf92f3577b34da6a3ce929d0e0e4736"
	req3, err := http.NewRequest(http.MethodGet, "https://app.localhost/h3?token=q-s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	req3.Header.Set("Traceparent", "00-"+h3TraceID+"-"+parentID+"-01")
	resp3, err := h3ClientFor(t, addr, roots).Do(req3)
	if err != nil {
		t.Fatalf("GET over HTTP/3: %v", err)
	}
	io.Copy(io.Discard, resp3.Body)
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusOK || resp3.ProtoMajor != 3 {
		t.Fatalf("got %d %s, want 200 over HTTP/3", resp3.StatusCode, resp3.Proto)
	}
	h3Header := <-seen

	rc := goredis.NewClient(&goredis.Options{
		Addr: fmt.Sprintf("127.0.0.1:%d", redisPort), Password: redisPassword, MaxRetries: -1,
		DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{ServerName: "db.localhost", RootCAs: roots},
	})
	if err := rc.Set(t.Context(), "k", "v-s3cret", 0).Err(); err != nil {
		t.Fatalf("SET through leproxy: %v", err)
	}
	rc.Close()
	// The session has ended once its log line is there.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.log.String(), "session end") {
		if time.Now().After(deadline) {
			t.Fatalf("no session end line:\n%s", d.log)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	var server, client, session, h3Server, h3Client otlptest.Span
	for _, s := range spans {
		switch {
		case s.TraceID == h3TraceID && s.Kind == tracepb.Span_SPAN_KIND_SERVER:
			h3Server = s
		case s.TraceID == h3TraceID && s.Kind == tracepb.Span_SPAN_KIND_CLIENT:
			h3Client = s
		case s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Name == "GET":
			server = s
		case s.Kind == tracepb.Span_SPAN_KIND_CLIENT:
			client = s
		case s.Name == "redis session":
			session = s
		}
	}
	if server.SpanID == "" || client.SpanID == "" || session.SpanID == "" {
		t.Fatalf("after stop the receiver has:\n%s\nwant a server, a client and a redis session span", otlptest.Dump(spans))
	}
	if server.TraceID != traceID || server.ParentSpanID != parentID {
		t.Errorf("server span in trace %s under %s, want trace %s under the client's %s", server.TraceID, server.ParentSpanID, traceID, parentID)
	}
	if client.ParentSpanID != server.SpanID {
		t.Errorf("client span's parent %s, want the server span %s", client.ParentSpanID, server.SpanID)
	}
	if want := "00-" + traceID + "-" + client.SpanID + "-01"; backendHeader.Get("Traceparent") != want {
		t.Errorf("backend got traceparent %q, want %q", backendHeader.Get("Traceparent"), want)
	}
	if server.Attrs["url.path"] != "/orders" || server.Attrs["network.protocol.version"] != "2" ||
		server.Attrs["server.address"] != "app.localhost" || server.Attrs["http.response.status_code"] != int64(200) {
		t.Errorf("server span attributes %v", server.Attrs)
	}
	if h3Server.ParentSpanID != parentID || h3Server.Attrs["network.protocol.version"] != "3" ||
		h3Server.Attrs["url.path"] != "/h3" || h3Client.ParentSpanID != h3Server.SpanID {
		t.Errorf("HTTP/3 spans:\n%s\nwant a server span under %s with network.protocol.version 3 and its client span", otlptest.Dump([]otlptest.Span{h3Server, h3Client}), parentID)
	}
	if want := "00-" + h3TraceID + "-" + h3Client.SpanID + "-01"; h3Header.Get("Traceparent") != want {
		t.Errorf("backend got traceparent %q over HTTP/3, want %q", h3Header.Get("Traceparent"), want)
	}
	if server.Resource["service.name"] != "edge-proxy" {
		t.Errorf("service.name %v, want edge-proxy from OTEL_SERVICE_NAME", server.Resource["service.name"])
	}
	if session.Attrs["network.protocol.name"] != "redis" || session.Attrs["leproxy.route"] != "db.localhost" ||
		session.Attrs["leproxy.session.end_reason"] != "closed" || session.Attrs["leproxy.session.closed_by"] != "client" {
		t.Errorf("session span attributes %v", session.Attrs)
	}
	if in, _ := session.Attrs["leproxy.session.bytes_in"].(int64); in == 0 {
		t.Errorf("session span counts no bytes in: %v", session.Attrs)
	}
	for _, s := range spans {
		text := fmt.Sprint(s.Name, s.StatusMessage, s.Attrs, s.Events)
		for _, secret := range []string{"s3cret", "token", "Bearer"} {
			if strings.Contains(text, secret) {
				t.Errorf("span %q carries %q: %s", s.Name, secret, text)
			}
		}
	}
}

// TestTracingOffByDefault checks that without -otel or an endpoint
// variable leproxy says nothing of tracing, and that a bad OTEL_ variable
// with tracing on is a start-up error naming it.
func TestTracingOffByDefault(t *testing.T) {
	clearOTELEnv(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: 127.0.0.1:9\n")
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	if strings.Contains(d.log.String(), "tracing") {
		t.Errorf("tracing mentioned with tracing off:\n%s", d.log)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := runIO(ctx, []string{"-otel", "-map", mapping, "-cache", filepath.Join(t.TempDir(), "c"), "-addr", "127.0.0.1:0", "-http", "", "-acme", "local"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER") {
		t.Errorf("got %v, want a start-up error naming OTEL_TRACES_SAMPLER", err)
	}
}
