package dbtest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/testenv"
)

// A Proxy is a dbproxy Server under test on 127.0.0.1.
type Proxy struct {
	Srv  *dbproxy.Server
	Addr string
	CA   *CA
	Logs *LogBuffer // the Server's log, JSON
}

// StartProxy starts a Server for cfg, filling in, when they are unset, a
// certificate source from ca for every route host and a JSON logger into
// Logs, and shuts it down when the test ends. cfg.Protocol is required.
func StartProxy(t testing.TB, ca *CA, cfg dbproxy.Config) *Proxy {
	t.Helper()
	p := &Proxy{CA: ca, Logs: new(LogBuffer)}
	if cfg.GetCertificate == nil {
		var hosts []string
		for _, r := range cfg.Routes {
			hosts = append(hosts, r.Host)
		}
		cfg.GetCertificate = ca.CertSource(t, hosts...)
	}
	if cfg.Logger == nil {
		// Debug: a session refused for an unknown server name ends at Debug.
		cfg.Logger = slog.New(slog.NewJSONHandler(p.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := dbproxy.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Srv, p.Addr = srv, l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, dbproxy.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.Logs)
		}
	})
	return p
}

// StartProtocol starts a Server for the registered protocol name with
// routes and def as its default route.
func StartProtocol(t testing.TB, ca *CA, name, def string, routes ...dbproxy.Route) *Proxy {
	t.Helper()
	proto, ok := dbproxy.Lookup(name)
	if !ok {
		t.Fatalf("protocol %s is not registered", name)
	}
	return StartProxy(t, ca, dbproxy.Config{Protocol: proto, Routes: routes, Default: def})
}

// Dial connects to the proxy; the connection has a 20 s deadline and
// closes when the test ends.
func (p *Proxy) Dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// DialTLS connects to the proxy with TLS from the first byte, sending sni
// ("" for none) and verifying the certificate for verifyName, offering
// alpn.
func (p *Proxy) DialTLS(t testing.TB, sni, verifyName string, alpn ...string) *tls.Conn {
	t.Helper()
	tc := p.CA.ClientTLS(p.Dial(t), sni, verifyName, alpn...)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return tc
}

// SessionEnds returns the proxy's "session end" log records so far.
func (p *Proxy) SessionEnds(t testing.TB) []map[string]any {
	t.Helper()
	return p.Logs.Records(t, "session end")
}

// SessionError waits for the proxy's first "session end" log line and
// returns its error attribute ("" for none).
func (p *Proxy) SessionError(t testing.TB) string {
	t.Helper()
	var rec map[string]any
	WaitFor(t, "session end log line", func() bool {
		recs := p.SessionEnds(t)
		if len(recs) == 0 {
			return false
		}
		rec = recs[0]
		return true
	})
	s, _ := rec["error"].(string)
	return s
}

// WaitFor polls cond until it holds or 10 s pass.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ClosedAddr is a loopback address on which nothing listens.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	// A port from testenv's reservation, not one probed with :0 and
	// closed: that one is in the kernel's ephemeral range, where the
	// Server under test's own :0 listener could be given it (CI saw a
	// "down" backend answer as the proxy itself).
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
}

// MustWrite writes b to w or fails the test.
func MustWrite(t testing.TB, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// ReadAll reads c until EOF or error, for at most 10 s, and returns what
// came; the error is nil for a clean EOF.
func ReadAll(t testing.TB, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
