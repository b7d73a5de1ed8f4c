package dbproxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Helpers for the TLS-first protocols' tests (redis, memcached, amqp,
// tls), and the tests of the shared handshake, through the "tls" protocol.

// tfProxy starts a Server for the registered protocol proto with routes
// and def as its default route.
func tfProxy(t testing.TB, ca *testCA, proto string, def string, routes ...Route) *testProxy {
	t.Helper()
	p, ok := Lookup(proto)
	if !ok {
		t.Fatalf("protocol %s is not registered", proto)
	}
	return startProxy(t, ca, Config{Protocol: p, Routes: routes, Default: def})
}

// tfDialTLS connects to the proxy with TLS, sending sni ("" for none) and
// verifying the certificate for verifyName, offering alpn.
func tfDialTLS(t testing.TB, p *testProxy, sni, verifyName string, alpn ...string) *tls.Conn {
	t.Helper()
	tc := clientTLS(p.dial(t), p.ca, sni, verifyName, alpn...)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return tc
}

// tfClosedAddr is an address on which nothing listens.
func tfClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// tfSessionError waits for the proxy's "session end" log line and returns
// its error attribute.
func tfSessionError(t testing.TB, p *testProxy) string {
	t.Helper()
	var rec map[string]any
	waitFor(t, "session end log line", func() bool {
		recs := p.logs.records(t, "session end")
		if len(recs) == 0 {
			return false
		}
		rec = recs[0]
		return true
	})
	s, _ := rec["error"].(string)
	return s
}

// tfReadAll reads until EOF or error and returns what came; the error is
// nil for a clean EOF.
func tfReadAll(t testing.TB, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// tfEcho is a backend that answers each line it reads with its name, a
// colon and the line, in plaintext or, with cert, over TLS.
type tfEcho struct {
	name string
	addr string
}

func tfStartEcho(t testing.TB, name string, cert *tls.Certificate) *tfEcho {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	e := &tfEcho{name: name, addr: l.Addr().String()}
	serveFake(t, l, 30*time.Second, nil, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, e.name+":"+line); err != nil {
				return
			}
		}
	})
	return e
}

// tfEchoLine sends line and returns the answer, without its newline.
func tfEchoLine(t testing.TB, c net.Conn, line string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("writing: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading answer to %q: %v (got %q)", line, err, got)
	}
	return strings.TrimSuffix(got, "\n")
}

func TestTLSProtoRoutes(t *testing.T) {
	ca := newTestCA(t)
	a := tfStartEcho(t, "a", nil)
	b := tfStartEcho(t, "b", nil)
	p := tfProxy(t, ca, "tls", "a.test", Route{Host: "a.test", Backend: a.addr}, Route{Host: "b.test", Backend: b.addr})
	tests := []struct {
		name, sni, verify string
		alpn              []string
		want              string
	}{
		{"server name a", "a.test", "a.test", nil, "a:hello"},
		{"server name b", "b.test", "b.test", nil, "b:hello"},
		{"server name in other case", "B.TEST", "b.test", nil, "b:hello"},
		{"no server name gets the default", "", "a.test", nil, "a:hello"},
		{"offered ALPN is not negotiated", "b.test", "b.test", []string{"h2", "http/1.1"}, "b:hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := tfDialTLS(t, p, tt.sni, tt.verify, tt.alpn...)
			if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
				t.Errorf("negotiated ALPN %q, want none", got)
			}
			if got := tfEchoLine(t, tc, "hello"); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTLSProtoRefusals(t *testing.T) {
	ca := newTestCA(t)
	echo := tfStartEcho(t, "a", nil)
	tests := []struct {
		name    string
		def     string
		routes  []Route
		client  func(t *testing.T, p *testProxy) net.Conn
		wantErr string // in the session's log line
	}{{
		name:   "plaintext on the TLS port",
		def:    "a.test",
		routes: []Route{{Host: "a.test", Backend: echo.addr}},
		client: func(t *testing.T, p *testProxy) net.Conn {
			c := p.dial(t)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
			return c
		},
		wantErr: "not a TLS handshake (first byte 0x47)",
	}, {
		name:   "unknown server name",
		def:    "a.test",
		routes: []Route{{Host: "a.test", Backend: echo.addr}},
		client: func(t *testing.T, p *testProxy) net.Conn {
			return tfDialTLS(t, p, "c.test", "a.test")
		},
		wantErr: `no route for server name "c.test"`,
	}, {
		name:   "no server name and no default",
		routes: []Route{{Host: "a.test", Backend: echo.addr}},
		client: func(t *testing.T, p *testProxy) net.Conn {
			return tfDialTLS(t, p, "", "a.test")
		},
		wantErr: "no route for clients that send no server name",
	}, {
		name:   "backend down",
		def:    "a.test",
		routes: []Route{{Host: "a.test", Backend: tfClosedAddr(t)}},
		client: func(t *testing.T, p *testProxy) net.Conn {
			return tfDialTLS(t, p, "a.test", "a.test")
		},
		wantErr: "dialing backend",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tfProxy(t, ca, "tls", tt.def, tt.routes...)
			c := tt.client(t, p)
			got, err := tfReadAll(t, c)
			c.Close()
			if got != "" {
				t.Errorf("client read %q, want nothing", got)
			}
			if _, isTLS := c.(*tls.Conn); isTLS && err != nil {
				t.Errorf("TLS client read error %v, want a clean close_notify EOF", err)
			}
			if msg := tfSessionError(t, p); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestTLSProtoPlaintextAllowed(t *testing.T) {
	ca := newTestCA(t)
	echo := tfStartEcho(t, "a", nil)
	p := tfProxy(t, ca, "tls", "a.test", Route{Host: "a.test", Backend: echo.addr, AllowPlaintext: true})
	// The first byte, which the proxy read to tell plaintext from TLS,
	// reaches the backend too.
	if got := tfEchoLine(t, p.dial(t), "plain"); got != "a:plain" {
		t.Errorf("plaintext client got %q, want %q", got, "a:plain")
	}
	if got := tfEchoLine(t, tfDialTLS(t, p, "a.test", "a.test"), "secure"); got != "a:secure" {
		t.Errorf("TLS client got %q, want %q", got, "a:secure")
	}
}

func TestTLSProtoBackendTLS(t *testing.T) {
	ca := newTestCA(t)
	cert, _, _ := ca.issue(t, "127.0.0.1")
	backend := tfStartEcho(t, "tls-backend", &cert)
	other := newTestCA(t)
	tests := []struct {
		name    string
		route   Route
		ok      bool
		wantErr string // in the session's log line
	}{
		{"verify", Route{Host: "a.test", Backend: backend.addr, TLS: TLSVerify, RootCAs: ca.pool}, true, ""},
		{"insecure", Route{Host: "a.test", Backend: backend.addr, TLS: TLSInsecure}, true, ""},
		{"verify against another CA", Route{Host: "a.test", Backend: backend.addr, TLS: TLSVerify, RootCAs: other.pool}, false,
			"TLS handshake with backend"},
		// The backend's TLS rejects the plaintext; nothing gets through.
		{"plaintext to a TLS backend", Route{Host: "a.test", Backend: backend.addr}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tfProxy(t, ca, "tls", "", tt.route)
			tc := tfDialTLS(t, p, "a.test", "a.test")
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			// Longer than a TLS record header, so that a TLS backend
			// reading it as one fails at once.
			const line = "hello, backend\n"
			io.WriteString(tc, line)
			got, _ := bufio.NewReader(tc).ReadString('\n')
			if tt.ok && got != "tls-backend:"+line {
				t.Errorf("got %q, want %q", got, "tls-backend:"+line)
			}
			if !tt.ok && strings.Contains(got, "tls-backend") {
				t.Errorf("got %q through a backend link that must fail", got)
			}
			tc.Close()
			if msg := tfSessionError(t, p); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestTLSProtoHandshakeTimeout(t *testing.T) {
	ca := newTestCA(t)
	echo := tfStartEcho(t, "a", nil)
	p := startProxy(t, ca, Config{Protocol: &tlsProto{}, Routes: []Route{{Host: "a.test", Backend: echo.addr}},
		HandshakeTimeout: 200 * time.Millisecond})
	c := p.dial(t)
	// Silent client: the first byte never comes.
	if _, err := tfReadAll(t, c); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("proxy did not close a silent client: %v", err)
		}
	}
	if msg := tfSessionError(t, p); !strings.Contains(msg, "reading first byte") {
		t.Errorf("session error %q, want it to mention reading the first byte", msg)
	}
}
