package dbproxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	_ "github.com/leproxy/leproxy/dbproxy/tlsproxy" // the "tls" protocol the core is tested through
)

// The core is tested through the protocol-agnostic "tls" protocol in front
// of line echo backends, and through a test protocol that serves its
// sessions itself (servedProtocol).

func tlsProto(t testing.TB) dbproxy.Protocol {
	t.Helper()
	p, ok := dbproxy.Lookup("tls")
	if !ok {
		t.Fatal("tls is not registered")
	}
	return p
}

// twoEchoes starts echo backends a and b behind a tls proxy with routes
// a.test and b.test, a.test the default; mod adjusts the Config.
func twoEchoes(t *testing.T, mod func(*dbproxy.Config)) (*dbtest.Proxy, *dbtest.Echo, *dbtest.Echo) {
	t.Helper()
	a, b := dbtest.StartEcho(t, "a", nil), dbtest.StartEcho(t, "b", nil)
	cfg := dbproxy.Config{
		Protocol: tlsProto(t),
		Routes:   []dbproxy.Route{{Host: "a.test", Backend: a.Addr}, {Host: "b.test", Backend: b.Addr}},
		Default:  "a.test",
	}
	if mod != nil {
		mod(&cfg)
	}
	return dbtest.StartProxy(t, dbtest.NewCA(t), cfg), a, b
}

func TestNewChecksConfig(t *testing.T) {
	proto := tlsProto(t)
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("none") }
	good := dbproxy.Route{Host: "a.test", Backend: "127.0.0.1:5432"}
	tests := []struct {
		name    string
		cfg     dbproxy.Config
		wantErr string
	}{
		{"ok", dbproxy.Config{Protocol: proto, GetCertificate: getCert, Routes: []dbproxy.Route{good}}, ""},
		{"no protocol", dbproxy.Config{GetCertificate: getCert, Routes: []dbproxy.Route{good}}, "no protocol"},
		{"no certificates", dbproxy.Config{Protocol: proto, Routes: []dbproxy.Route{good}}, "no GetCertificate"},
		{"no routes", dbproxy.Config{Protocol: proto, GetCertificate: getCert}, "no routes"},
		{"duplicate host", dbproxy.Config{Protocol: proto, GetCertificate: getCert, Routes: []dbproxy.Route{good, {Host: "A.test.", Backend: "127.0.0.1:1"}}}, "duplicate host"},
		{"bad backend", dbproxy.Config{Protocol: proto, GetCertificate: getCert, Routes: []dbproxy.Route{{Host: "a.test", Backend: "nowhere"}}}, "backend"},
		{"bad tls mode", dbproxy.Config{Protocol: proto, GetCertificate: getCert, Routes: []dbproxy.Route{{Host: "a.test", Backend: "127.0.0.1:1", TLS: "maybe"}}}, "tls mode"},
		{"unknown default", dbproxy.Config{Protocol: proto, GetCertificate: getCert, Routes: []dbproxy.Route{good}, Default: "b.test"}, "default"},
		{"h2", dbproxy.Config{Protocol: h2Protocol{proto}, GetCertificate: getCert, Routes: []dbproxy.Route{good}}, "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dbproxy.New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

var registerOnce sync.Once // -count=N runs TestRegistry N times

type h2Protocol struct{ dbproxy.Protocol }

func (h2Protocol) Name() string   { return "web" }
func (h2Protocol) ALPN() []string { return []string{"h2"} }

func TestRegistry(t *testing.T) {
	a, ok := dbproxy.Lookup("tls")
	if !ok {
		t.Fatal("tls is not registered")
	}
	b, _ := dbproxy.Lookup("TLS")
	if a == b {
		t.Error("Lookup returned the same value twice; each Server needs its own")
	}
	if a.Name() != "tls" || a.ALPN() != nil {
		t.Errorf("got %s %v, want tls []", a.Name(), a.ALPN())
	}
	registerOnce.Do(func() {
		dbproxy.Register("test-registry", func() dbproxy.Protocol { return h2Protocol{} }, "test-registry-alias")
	})
	if _, ok := dbproxy.Lookup("Test-Registry-Alias"); !ok {
		t.Error("Lookup did not resolve an alias")
	}
	if c, ok := dbproxy.Canonical("test-registry-alias"); !ok || c != "test-registry" {
		t.Errorf("Canonical(alias) = %q, %v; want test-registry", c, ok)
	}
	if _, ok := dbproxy.Canonical("nonesuch"); ok {
		t.Error("Canonical resolved an unknown name")
	}
	if got := dbproxy.Aliases()["test-registry-alias"]; got != "test-registry" {
		t.Errorf("Aliases()[alias] = %q", got)
	}
	names := dbproxy.Protocols()
	if !slices.Contains(names, "tls") || !slices.Contains(names, "test-registry") || slices.Contains(names, "test-registry-alias") || !slices.IsSorted(names) {
		t.Errorf("Protocols() = %v, want sorted canonical names only", names)
	}
	for _, name := range []string{"tls", "test-registry-alias", "", "Upper"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			dbproxy.Register(name, func() dbproxy.Protocol { return h2Protocol{} })
		}()
	}
}

func TestGetCertificate(t *testing.T) {
	ca := dbtest.NewCA(t)
	var asked []string
	var mu sync.Mutex
	srv, err := dbproxy.New(dbproxy.Config{
		Protocol: tlsProto(t),
		Routes:   []dbproxy.Route{{Host: "a.test", Backend: "127.0.0.1:1"}, {Host: "b.test", Backend: "127.0.0.1:2"}},
		Default:  "b.test",
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			asked = append(asked, hello.ServerName)
			mu.Unlock()
			c, _, _ := ca.Issue(t, hello.ServerName)
			return &c, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni  string
		alpn []string
		want string // the name GetCertificate is asked for; "" for a refusal
	}{
		{sni: "a.test", want: "a.test"},
		{sni: "A.TEST.", want: "a.test"},
		{sni: "", want: "b.test"},
		{sni: "c.test", want: "b.test"},
		{sni: "a.test", alpn: []string{"acme-tls/1"}, want: ""},
	}
	for _, tt := range tests {
		asked = nil
		_, err := srv.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni, SupportedProtos: tt.alpn})
		if tt.want == "" {
			if err == nil || len(asked) != 0 {
				t.Errorf("SNI %q ALPN %v: got %v, asked %v; want a refusal", tt.sni, tt.alpn, err, asked)
			}
			continue
		}
		if err != nil || !slices.Equal(asked, []string{tt.want}) {
			t.Errorf("SNI %q: got %v, asked %v; want %q asked", tt.sni, err, asked, tt.want)
		}
	}
}

func TestSessionEndLogAndStats(t *testing.T) {
	p, a, _ := twoEchoes(t, nil)
	conn := p.DialTLS(t, "a.test", "a.test")
	if got := dbtest.EchoLine(t, conn, "hello"); got != "a:hello" {
		t.Fatalf("got %q", got)
	}
	dbtest.WaitFor(t, "an active session", func() bool { return p.Srv.Stats().Routes[0].Active == 1 })
	conn.Close()
	wantIn, wantOut := len("hello\n"), len("a:hello\n")

	dbtest.WaitFor(t, "the session to end", func() bool { return len(p.SessionEnds(t)) == 1 })
	rec := p.SessionEnds(t)[0]
	want := map[string]any{
		"sni": "a.test", "route": "a.test", "backend": a.Addr, "protocol": "tls",
		"bytes_in": float64(wantIn), "bytes_out": float64(wantOut), "error": nil,
	}
	for k, v := range want {
		if got, ok := rec[k]; !ok || got != v {
			t.Errorf("log %s: got %v, want %v", k, got, v)
		}
	}
	for _, k := range []string{"client", "duration", "listen"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("log line has no %s: %v", k, rec)
		}
	}

	// One more session that fails before routing.
	bad := p.DialTLS(t, "c.test", "a.test")
	io.Copy(io.Discard, bad)
	dbtest.WaitFor(t, "two session ends", func() bool { return len(p.SessionEnds(t)) == 2 })

	st := p.Srv.Stats()
	ra := st.Routes[0]
	if st.Accepted != 2 || st.Unrouted != 1 || st.Handled != 0 || st.Refused != 0 {
		t.Errorf("server stats: got %+v, want 2 accepted, 1 unrouted", st)
	}
	if ra.Host != "a.test" || ra.Sessions != 1 || ra.Active != 0 || ra.Errors != 0 ||
		ra.BytesIn != uint64(wantIn) || ra.BytesOut != uint64(wantOut) || ra.Removed {
		t.Errorf("route stats: got %+v, want 1 session, %d in, %d out", ra, wantIn, wantOut)
	}
}

func TestOnTLSHandshake(t *testing.T) {
	var mu sync.Mutex
	var ok, failed int
	p, _, _ := twoEchoes(t, func(c *dbproxy.Config) {
		c.OnTLSHandshake = func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else {
				failed++
			}
		}
	})
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return ok, failed
	}
	p.DialTLS(t, "a.test", "a.test").Close()
	dbtest.WaitFor(t, "a successful handshake", func() bool { o, _ := counts(); return o == 1 })
	// A client that does not trust the certificate aborts the handshake.
	if err := tls.Client(p.Dial(t), &tls.Config{ServerName: "a.test"}).Handshake(); err == nil {
		t.Fatal("handshake without the test CA succeeded")
	}
	dbtest.WaitFor(t, "a failed handshake", func() bool { _, f := counts(); return f == 1 })
	if o, f := counts(); o != 1 || f != 1 {
		t.Errorf("got %d successful and %d failed handshakes, want 1 and 1", o, f)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		p, _, _ := twoEchoes(t, nil)
		conn := p.DialTLS(t, "a.test", "a.test")
		dbtest.EchoLine(t, conn, "before")
		done := make(chan error, 1)
		go func() { done <- p.Srv.Shutdown(context.Background()) }()
		// New connections are refused at once…
		dbtest.WaitFor(t, "the listener to close", func() bool {
			c, err := net.Dial("tcp", p.Addr)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		// …while the open session goes on until its client leaves.
		if got := dbtest.EchoLine(t, conn, "still here"); got != "a:still here" {
			t.Errorf("during drain: got %q", got)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a session open", err)
		default:
		}
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("Shutdown: got %v, want nil", err)
		}
		if err := p.Srv.Shutdown(context.Background()); err != nil {
			t.Errorf("second Shutdown: got %v, want nil", err)
		}
	})
	t.Run("forces after the deadline", func(t *testing.T) {
		p, _, _ := twoEchoes(t, nil)
		conn := p.DialTLS(t, "a.test", "a.test")
		dbtest.EchoLine(t, conn, "before")
		half := p.Dial(t) // a handshake in progress
		dbtest.MustWrite(t, half, []byte{0x16})
		dbtest.WaitFor(t, "two sessions", func() bool { return p.Srv.SessionCount() == 2 })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := p.Srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: got %v, want context.DeadlineExceeded", err)
		}
		// Shutdown returned only after every session ended.
		for _, c := range []net.Conn{conn, half} {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("connection still open after a forced Shutdown")
			}
		}
		if n := p.Srv.SessionCount(); n != 0 {
			t.Errorf("%d sessions left", n)
		}
	})
	t.Run("Serve after Shutdown", func(t *testing.T) {
		p, _, _ := twoEchoes(t, nil)
		p.Srv.Shutdown(context.Background())
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Srv.Serve(l); !errors.Is(err, dbproxy.ErrServerClosed) {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
		if _, err := l.Accept(); err == nil {
			t.Error("Serve left the listener open")
		}
		if err := p.Srv.ListenAndServe(); !errors.Is(err, dbproxy.ErrServerClosed) {
			t.Errorf("ListenAndServe: got %v, want ErrServerClosed", err)
		}
	})
}

// flakyListener fails Accept with a temporary error n times, then with a
// permanent one.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	temps int
	calls int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls <= l.temps {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EINVAL)}
}

func TestServeAcceptErrors(t *testing.T) {
	p, _, _ := twoEchoes(t, nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner, temps: 3}
	err = p.Srv.Serve(l)
	if err == nil || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Serve: got %v, want the permanent accept error", err)
	}
	if l.calls != 4 {
		t.Errorf("Accept called %d times, want 3 retries and the failure", l.calls)
	}
	if got := len(p.Logs.Records(t, "accept error")); got != 3 {
		t.Errorf("logged %d accept errors, want 3", got)
	}
}

// TestSessionEndReasons checks the closed_by and reason of the session-end
// line, and the route's Ends, for the ways a piped session ends that the
// conformance suite does not cover.
func TestSessionEndReasons(t *testing.T) {
	// A backend that says goodbye and closes, and one that resets.
	closing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ServeFake(t, closing, 30*time.Second, nil, func(c net.Conn) { io.WriteString(c, "bye\n") })
	resetting, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ServeFake(t, resetting, 30*time.Second, nil, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 4))
		c.(*net.TCPConn).SetLinger(0)
	})
	tests := []struct {
		name, backend string
		client        func(t *testing.T, c net.Conn)
		by, reason    string
	}{
		{"backend closes", closing.Addr().String(), func(t *testing.T, c net.Conn) {
			if got, _ := dbtest.ReadAll(t, c); got != "bye\n" {
				t.Errorf("client read %q", got)
			}
		}, dbproxy.ByBackend, dbproxy.ReasonClosed},
		{"backend resets", resetting.Addr().String(), func(t *testing.T, c net.Conn) {
			dbtest.MustWrite(t, c, []byte("ping"))
			dbtest.ReadAll(t, c)
		}, dbproxy.ByBackend, dbproxy.ReasonReset},
		{"backend down", dbtest.ClosedAddr(t), func(t *testing.T, c net.Conn) { dbtest.ReadAll(t, c) },
			dbproxy.ByBackend, dbproxy.ReasonUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{
				Protocol: tlsProto(t),
				Routes:   []dbproxy.Route{{Host: "a.test", Backend: tt.backend}},
			})
			c := p.DialTLS(t, "a.test", "a.test")
			tt.client(t, c)
			c.Close()
			dbtest.WaitFor(t, "the session end", func() bool { return len(p.SessionEnds(t)) == 1 })
			rec := p.SessionEnds(t)[0]
			if rec["closed_by"] != tt.by || rec["reason"] != tt.reason {
				t.Errorf("closed_by=%v reason=%v, want %s %s (error %v)", rec["closed_by"], rec["reason"], tt.by, tt.reason, rec["error"])
			}
			if n := p.Srv.Stats().Routes[0].Ends[dbproxy.End{By: tt.by, Reason: tt.reason}]; n != 1 {
				t.Errorf("route Ends %v", p.Srv.Stats().Routes[0].Ends)
			}
		})
	}
}
