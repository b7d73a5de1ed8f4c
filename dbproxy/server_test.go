package dbproxy

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

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestNewChecksConfig(t *testing.T) {
	proto, _ := Lookup("postgres")
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("none") }
	good := Route{Host: "a.test", Backend: "127.0.0.1:5432"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Protocol: proto, GetCertificate: getCert, Routes: []Route{good}}, ""},
		{"no protocol", Config{GetCertificate: getCert, Routes: []Route{good}}, "no protocol"},
		{"no certificates", Config{Protocol: proto, Routes: []Route{good}}, "no GetCertificate"},
		{"no routes", Config{Protocol: proto, GetCertificate: getCert}, "no routes"},
		{"duplicate host", Config{Protocol: proto, GetCertificate: getCert, Routes: []Route{good, {Host: "A.test", Backend: "127.0.0.1:1"}}}, "duplicate host"},
		{"bad backend", Config{Protocol: proto, GetCertificate: getCert, Routes: []Route{{Host: "a.test", Backend: "nowhere"}}}, "backend"},
		{"bad tls mode", Config{Protocol: proto, GetCertificate: getCert, Routes: []Route{{Host: "a.test", Backend: "127.0.0.1:1", TLS: "maybe"}}}, "tls mode"},
		{"unknown default", Config{Protocol: proto, GetCertificate: getCert, Routes: []Route{good}, Default: "b.test"}, "default"},
		{"h2", Config{Protocol: h2Protocol{}, GetCertificate: getCert, Routes: []Route{good}}, "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

type h2Protocol struct{ Protocol }

func (h2Protocol) Name() string   { return "web" }
func (h2Protocol) ALPN() []string { return []string{"h2"} }

func TestRegistry(t *testing.T) {
	a, ok := Lookup("postgres")
	if !ok {
		t.Fatal("postgres is not registered")
	}
	b, _ := Lookup("postgres")
	if a == b {
		t.Error("Lookup returned the same value twice; each Server needs its own")
	}
	if a.Name() != "postgres" || !slices.Equal(a.ALPN(), []string{"postgresql"}) {
		t.Errorf("got %s %v, want postgres [postgresql]", a.Name(), a.ALPN())
	}
	if _, ok := Lookup("postgresql"); ok {
		t.Error("Lookup resolved an alias; aliases are the caller's")
	}
	if !slices.Contains(Protocols(), "postgres") {
		t.Errorf("Protocols() = %v, want postgres in it", Protocols())
	}
}

func TestGetCertificate(t *testing.T) {
	ca := newTestCA(t)
	var asked []string
	var mu sync.Mutex
	proto, _ := Lookup("postgres")
	srv, err := New(Config{
		Protocol: proto,
		Routes:   []Route{{Host: "a.test", Backend: "127.0.0.1:1"}, {Host: "b.test", Backend: "127.0.0.1:2"}},
		Default:  "b.test",
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			asked = append(asked, hello.ServerName)
			mu.Unlock()
			c, _, _ := ca.issue(t, hello.ServerName)
			return &c, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni   string
		alpn  []string
		want  string // the name GetCertificate is asked for; "" for a refusal
		wants string
	}{
		{sni: "a.test", want: "a.test"},
		{sni: "A.TEST.", want: "a.test"},
		{sni: "", want: "b.test"},
		{sni: "c.test", want: "b.test"},
		{sni: "a.test", alpn: []string{"acme-tls/1"}, want: ""},
	}
	for _, tt := range tests {
		asked = nil
		_, err := srv.getCertificate(&tls.ClientHelloInfo{ServerName: tt.sni, SupportedProtos: tt.alpn})
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
	p, a, _ := twoBackends(t, nil)
	conn := sslRequest(t, p.dial(t), p.ca, "a.test", "a.test")
	mustWrite(t, conn, startupBytes(3, 0, "user", "alice", "database", "app"))
	fe := pgproto3.NewFrontend(conn, conn)
	if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	waitFor(t, "an active session", func() bool { return p.srv.Stats().Routes[0].Active == 1 })
	query(t, fe, "select 1")
	fe.Send(&pgproto3.Terminate{})
	fe.Flush()
	io.Copy(io.Discard, conn) // the backend closes; the proxy passes it on
	conn.Close()

	// Bytes after the handshake: the Query and the Terminate in; the
	// CommandComplete and ReadyForQuery out.
	q, _ := (&pgproto3.Query{String: "select 1"}).Encode(nil)
	x, _ := (&pgproto3.Terminate{}).Encode(nil)
	cc, _ := (&pgproto3.CommandComplete{CommandTag: []byte("a:false:select 1")}).Encode(nil)
	z, _ := (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(nil)
	wantIn, wantOut := len(q)+len(x), len(cc)+len(z)

	waitFor(t, "the session to end", func() bool { return len(p.logs.records(t, "session end")) == 1 })
	rec := p.logs.records(t, "session end")[0]
	want := map[string]any{
		"sni": "a.test", "route": "a.test", "backend": a.addr, "user": "alice", "database": "app",
		"bytes_in": float64(wantIn), "bytes_out": float64(wantOut), "error": nil,
	}
	for k, v := range want {
		if got, ok := rec[k]; !ok || got != v {
			t.Errorf("log %s: got %v, want %v", k, got, v)
		}
	}
	for _, k := range []string{"client", "duration", "protocol"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("log line has no %s: %v", k, rec)
		}
	}

	// One more session that fails before routing, one routed that fails.
	bad := sslRequest(t, p.dial(t), p.ca, "c.test", "a.test")
	mustWrite(t, bad, startupBytes(3, 0, "user", "u"))
	io.Copy(io.Discard, bad)
	waitFor(t, "two session ends", func() bool { return len(p.logs.records(t, "session end")) == 2 })

	st := p.srv.Stats()
	ra := st.Routes[0]
	if st.Accepted != 2 || st.Unrouted != 1 || st.Handled != 0 || st.Refused != 0 {
		t.Errorf("server stats: got %+v, want 2 accepted, 1 unrouted", st)
	}
	if ra.Host != "a.test" || ra.Sessions != 1 || ra.Active != 0 || ra.Errors != 0 ||
		ra.BytesIn != uint64(wantIn) || ra.BytesOut != uint64(wantOut) {
		t.Errorf("route stats: got %+v, want 1 session, %d in, %d out", ra, wantIn, wantOut)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		p, _, _ := twoBackends(t, nil)
		conn := sslRequest(t, p.dial(t), p.ca, "a.test", "a.test")
		mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
		fe := pgproto3.NewFrontend(conn, conn)
		if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
			t.Fatalf("startup: %+v", res)
		}
		done := make(chan error, 1)
		go func() { done <- p.srv.Shutdown(context.Background()) }()
		// New connections are refused at once…
		waitFor(t, "the listener to close", func() bool {
			c, err := net.Dial("tcp", p.addr)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		// …while the open session goes on until its client leaves.
		if got := query(t, fe, "still here"); got != "a:false:still here" {
			t.Errorf("query during drain: got %q", got)
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
		if err := p.srv.Shutdown(context.Background()); err != nil {
			t.Errorf("second Shutdown: got %v, want nil", err)
		}
	})
	t.Run("forces after the deadline", func(t *testing.T) {
		p, _, _ := twoBackends(t, nil)
		conn := sslRequest(t, p.dial(t), p.ca, "a.test", "a.test")
		mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
		fe := pgproto3.NewFrontend(conn, conn)
		if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
			t.Fatalf("startup: %+v", res)
		}
		half := p.dial(t) // a handshake in progress
		mustWrite(t, half, []byte{0})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := p.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: got %v, want context.DeadlineExceeded", err)
		}
		// Shutdown returned only after every session ended.
		for _, c := range []net.Conn{conn, half} {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("connection still open after a forced Shutdown")
			}
		}
		p.srv.mu.Lock()
		n := len(p.srv.sessions)
		p.srv.mu.Unlock()
		if n != 0 {
			t.Errorf("%d sessions left", n)
		}
	})
	t.Run("Serve after Shutdown", func(t *testing.T) {
		p, _, _ := twoBackends(t, nil)
		p.srv.Shutdown(context.Background())
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
		if _, err := l.Accept(); err == nil {
			t.Error("Serve left the listener open")
		}
		if err := p.srv.ListenAndServe(); !errors.Is(err, ErrServerClosed) {
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
	p, _, _ := twoBackends(t, nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner, temps: 3}
	err = p.srv.Serve(l)
	if err == nil || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Serve: got %v, want the permanent accept error", err)
	}
	if l.calls != 4 {
		t.Errorf("Accept called %d times, want 3 retries and the failure", l.calls)
	}
	if got := len(p.logs.records(t, "accept error")); got != 3 {
		t.Errorf("logged %d accept errors, want 3", got)
	}
}
