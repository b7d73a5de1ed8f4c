package tlsproxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestTLSProtoRoutes(t *testing.T) {
	ca := dbtest.NewCA(t)
	a := dbtest.StartEcho(t, "a", nil)
	b := dbtest.StartEcho(t, "b", nil)
	p := dbtest.StartProtocol(t, ca, "tls", "a.test", dbproxy.Route{Host: "a.test", Backend: a.Addr}, dbproxy.Route{Host: "b.test", Backend: b.Addr})
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
			tc := p.DialTLS(t, tt.sni, tt.verify, tt.alpn...)
			if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
				t.Errorf("negotiated ALPN %q, want none", got)
			}
			if got := dbtest.EchoLine(t, tc, "hello"); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTLSProtoRefusals(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	tests := []struct {
		name    string
		def     string
		routes  []dbproxy.Route
		client  func(t *testing.T, p *dbtest.Proxy) net.Conn
		wantErr string // in the session's log line
	}{{
		name:   "plaintext on the TLS port",
		def:    "a.test",
		routes: []dbproxy.Route{{Host: "a.test", Backend: echo.Addr}},
		client: func(t *testing.T, p *dbtest.Proxy) net.Conn {
			c := p.Dial(t)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
			return c
		},
		wantErr: "not a TLS handshake (first byte 0x47)",
	}, {
		name:   "unknown server name",
		def:    "a.test",
		routes: []dbproxy.Route{{Host: "a.test", Backend: echo.Addr}},
		client: func(t *testing.T, p *dbtest.Proxy) net.Conn {
			return p.DialTLS(t, "c.test", "a.test")
		},
		wantErr: `no route for server name "c.test"`,
	}, {
		name:   "no server name and no default",
		routes: []dbproxy.Route{{Host: "a.test", Backend: echo.Addr}},
		client: func(t *testing.T, p *dbtest.Proxy) net.Conn {
			return p.DialTLS(t, "", "a.test")
		},
		wantErr: "no route for clients that send no server name",
	}, {
		name:   "backend down",
		def:    "a.test",
		routes: []dbproxy.Route{{Host: "a.test", Backend: dbtest.ClosedAddr(t)}},
		client: func(t *testing.T, p *dbtest.Proxy) net.Conn {
			return p.DialTLS(t, "a.test", "a.test")
		},
		wantErr: "dialing backend",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "tls", tt.def, tt.routes...)
			c := tt.client(t, p)
			got, err := dbtest.ReadAll(t, c)
			c.Close()
			if got != "" {
				t.Errorf("client read %q, want nothing", got)
			}
			if _, isTLS := c.(*tls.Conn); isTLS && err != nil {
				t.Errorf("TLS client read error %v, want a clean close_notify EOF", err)
			}
			if msg := p.SessionError(t); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestTLSProtoPlaintextAllowed(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	p := dbtest.StartProtocol(t, ca, "tls", "a.test", dbproxy.Route{Host: "a.test", Backend: echo.Addr, AllowPlaintext: true})
	// The first byte, which the proxy read to tell plaintext from TLS,
	// reaches the backend too.
	if got := dbtest.EchoLine(t, p.Dial(t), "plain"); got != "a:plain" {
		t.Errorf("plaintext client got %q, want %q", got, "a:plain")
	}
	if got := dbtest.EchoLine(t, p.DialTLS(t, "a.test", "a.test"), "secure"); got != "a:secure" {
		t.Errorf("TLS client got %q, want %q", got, "a:secure")
	}
}

func TestTLSProtoBackendTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "127.0.0.1")
	backend := dbtest.StartEcho(t, "tls-backend", &cert)
	other := dbtest.NewCA(t)
	tests := []struct {
		name    string
		route   dbproxy.Route
		ok      bool
		wantErr string // in the session's log line
	}{
		{"verify", dbproxy.Route{Host: "a.test", Backend: backend.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, true, ""},
		{"insecure", dbproxy.Route{Host: "a.test", Backend: backend.Addr, TLS: dbproxy.TLSInsecure}, true, ""},
		{"verify against another CA", dbproxy.Route{Host: "a.test", Backend: backend.Addr, TLS: dbproxy.TLSVerify, RootCAs: other.Pool}, false,
			"TLS handshake with backend"},
		// The backend's TLS rejects the plaintext; nothing gets through.
		{"plaintext to a TLS backend", dbproxy.Route{Host: "a.test", Backend: backend.Addr}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "tls", "", tt.route)
			tc := p.DialTLS(t, "a.test", "a.test")
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
			if msg := p.SessionError(t); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestTLSProtoHandshakeTimeout(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	p := dbtest.StartProxy(t, ca, dbproxy.Config{Protocol: &protocol{}, Routes: []dbproxy.Route{{Host: "a.test", Backend: echo.Addr}},
		HandshakeTimeout: 200 * time.Millisecond})
	c := p.Dial(t)
	// Silent client: the first byte never comes.
	if _, err := dbtest.ReadAll(t, c); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("proxy did not close a silent client: %v", err)
		}
	}
	if msg := p.SessionError(t); !strings.Contains(msg, "reading first byte") {
		t.Errorf("session error %q, want it to mention reading the first byte", msg)
	}
}
