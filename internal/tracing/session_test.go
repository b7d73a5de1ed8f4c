package tracing

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	_ "github.com/leproxy/leproxy/dbproxy/redis"
	"github.com/leproxy/leproxy/internal/testenv"
	"github.com/leproxy/leproxy/internal/tracing/otlptest"
)

// startTracing starts a Provider exporting to a new OTLP/HTTP receiver.
func startTracing(t *testing.T) (*Provider, *otlptest.Receiver) {
	t.Helper()
	clearEnv(t)
	r := otlptest.StartHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.URL)
	p, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p, r
}

// TestSessionSpans runs redis sessions with go-redis through a dbproxy
// Server to a real redis-server that wants a password, and checks the one
// span each session makes: its attributes exactly, the bytes the session
// log line counted, and neither the password nor a key or value anywhere.
func TestSessionSpans(t *testing.T) {
	const password, secretValue = "pw-Zq8s3cret", "value-7hidden"
	srv := testenv.StartRedis(t, testenv.RedisOptions{Password: password})
	p, rcv := startTracing(t)
	ca := dbtest.NewCA(t)
	down := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) // reserved, nothing listens
	proto, _ := dbproxy.Lookup("redis")
	proxy := dbtest.StartProxy(t, ca, dbproxy.Config{
		Protocol: proto,
		Routes: []dbproxy.Route{
			{Host: "a.test", Backend: srv.Addr},
			{Host: "down.test", Backend: down},
		},
		Default:  "a.test",
		Observer: p.SessionObserver(),
	})
	_, listenPort, _ := net.SplitHostPort(proxy.Addr)

	client := goredis.NewClient(&goredis.Options{
		Addr: proxy.Addr, Password: password, Protocol: 2, MaxRetries: -1,
		DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{ServerName: "a.test", RootCAs: ca.Pool},
	})
	ctx := t.Context()
	if err := client.Set(ctx, "the-key", secretValue, 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := client.Get(ctx, "the-key").Result(); err != nil || got != secretValue {
		t.Fatalf("GET: %q, %v", got, err)
	}
	client.Close()

	downClient := goredis.NewClient(&goredis.Options{
		Addr: proxy.Addr, MaxRetries: -1, DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{ServerName: "down.test", RootCAs: ca.Pool},
	})
	if err := downClient.Ping(ctx).Err(); err == nil {
		t.Fatal("PING through a route whose backend is down succeeded")
	}
	downClient.Close()

	// Both sessions have ended once both log lines are there.
	dbtest.WaitFor(t, "two session end lines", func() bool { return len(proxy.SessionEnds(t)) == 2 })
	if err := p.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitFor(t, "two session spans", func(s []otlptest.Span) bool { return len(s) == 2 })
	byRoute := map[string]otlptest.Span{}
	for _, s := range spans {
		byRoute[fmt.Sprint(s.Attrs["leproxy.route"])] = s
	}
	var okLog map[string]any
	for _, rec := range proxy.SessionEnds(t) {
		if rec["route"] == "a.test" {
			okLog = rec
		}
	}
	if okLog == nil {
		t.Fatalf("no session end line for a.test: %v", proxy.SessionEnds(t))
	}
	ok := byRoute["a.test"]
	clientPort, _ := ok.Attrs["client.port"].(int64)
	wantOK := map[string]any{
		"network.transport":           "tcp",
		"network.protocol.name":       "redis",
		"client.address":              "127.0.0.1",
		"client.port":                 clientPort,
		"server.port":                 int64(atoi(t, listenPort)),
		"server.address":              "a.test",
		"leproxy.route":               "a.test",
		"leproxy.backend":             srv.Addr,
		"leproxy.session.server_name": "a.test",
		"leproxy.session.bytes_in":    int64(okLog["bytes_in"].(float64)),
		"leproxy.session.bytes_out":   int64(okLog["bytes_out"].(float64)),
		"leproxy.session.closed_by":   "client",
		"leproxy.session.end_reason":  "closed",
	}
	checkAttrs(t, ok, wantOK)
	if clientPort == 0 {
		t.Error("client.port missing")
	}
	if ok.Name != "redis session" || ok.Kind != tracepb.Span_SPAN_KIND_SERVER || ok.ParentSpanID != "" {
		t.Errorf("span %q kind %v parent %q, want a root server span named \"redis session\"", ok.Name, ok.Kind, ok.ParentSpanID)
	}
	if ok.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("a clean session has error status %q", ok.StatusMessage)
	}
	if ok.Attrs["leproxy.session.bytes_in"].(int64) == 0 || ok.Attrs["leproxy.session.bytes_out"].(int64) == 0 {
		t.Error("no bytes counted for a session that SET and GET a key")
	}
	if d := ok.End.Sub(ok.Start); d <= 0 || d > time.Minute {
		t.Errorf("span lasted %v", d)
	}

	failed := byRoute["down.test"]
	clientPort, _ = failed.Attrs["client.port"].(int64)
	checkAttrs(t, failed, map[string]any{
		"network.transport":           "tcp",
		"network.protocol.name":       "redis",
		"client.address":              "127.0.0.1",
		"client.port":                 clientPort,
		"server.port":                 int64(atoi(t, listenPort)),
		"server.address":              "down.test",
		"leproxy.route":               "down.test",
		"leproxy.backend":             down,
		"leproxy.session.server_name": "down.test",
		"leproxy.session.bytes_in":    int64(0),
		"leproxy.session.bytes_out":   int64(0),
		"leproxy.session.closed_by":   "backend",
		"leproxy.session.end_reason":  "unreachable",
		"error.type":                  "unreachable",
	})
	if failed.StatusCode != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("a session whose backend is down has status %v, want error", failed.StatusCode)
	}
	for _, s := range spans {
		noSecret(t, s, password, secretValue, "the-key", "connection refused")
	}
}

// checkAttrs fails unless s has exactly the attributes want.
func checkAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := s.Attrs[k]; !ok || got != v {
			t.Errorf("span %q: %s = %#v, want %#v", s.Name, k, got, v)
		}
	}
	for k, v := range s.Attrs {
		if _, ok := want[k]; !ok {
			t.Errorf("span %q: unexpected attribute %s = %#v", s.Name, k, v)
		}
	}
}

// noSecret fails if any attribute, event or status of s holds one of
// secrets.
func noSecret(t *testing.T, s otlptest.Span, secrets ...string) {
	t.Helper()
	texts := []string{s.Name, s.StatusMessage, fmt.Sprint(s.Attrs)}
	for _, e := range s.Events {
		texts = append(texts, e.Name, fmt.Sprint(e.Attrs))
	}
	for _, text := range texts {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("span %q carries %q: %s", s.Name, secret, text)
			}
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
