package dbproxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeRESP is a backend that answers every command with reply(name, sub),
// or "+<name>@<its name>" when reply returns "". Only for the proxy's own
// behaviour; the real Redis tests are in redis_integration_test.go.
type fakeRESP struct {
	name  string
	addr  string
	reply func(name, sub string) string
}

func startFakeRESP(t testing.TB, name string, reply func(name, sub string) string) *fakeRESP {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRESP{name: name, addr: l.Addr().String(), reply: reply}
	serveFake(t, l, 30*time.Second, nil, func(c net.Conn) {
		var out []byte
		cmds := newRESPCommands(func(name, sub []byte) {
			r := ""
			if f.reply != nil {
				r = f.reply(string(name), string(sub))
			}
			if r == "" {
				r = "+" + string(name) + "@" + f.name + "\r\n"
			}
			out = append(out, r...)
		})
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			cmds.feed(buf[:n])
			if len(out) > 0 {
				if _, err := c.Write(out); err != nil {
					return
				}
				out = out[:0]
			}
			if err != nil || cmds.lost {
				return
			}
		}
	})
	return f
}

// redisDo sends a command and reads one reply line (simple replies only).
func redisDo(t testing.TB, c net.Conn, br *bufio.Reader, args ...string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, respCommand(args...)); err != nil {
		t.Fatalf("sending %q: %v", args, err)
	}
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading reply to %q: %v (got %q)", args, err, line)
	}
	return line
}

func TestRedisRoutes(t *testing.T) {
	ca := newTestCA(t)
	a := startFakeRESP(t, "a", nil)
	b := startFakeRESP(t, "b", nil)
	p := tfProxy(t, ca, "redis", "a.test", Route{Host: "a.test", Backend: a.addr}, Route{Host: "b.test", Backend: b.addr})
	tests := []struct{ sni, verify, want string }{
		{"a.test", "a.test", "+ping@a\r\n"},
		{"b.test", "b.test", "+ping@b\r\n"},
		{"", "a.test", "+ping@a\r\n"}, // no SNI: the default
	}
	for _, tt := range tests {
		t.Run("sni="+tt.sni, func(t *testing.T) {
			tc := tfDialTLS(t, p, tt.sni, tt.verify)
			if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
				t.Errorf("negotiated ALPN %q, want none", got)
			}
			if got := redisDo(t, tc, bufio.NewReader(tc), "PING"); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedisRefusals(t *testing.T) {
	ca := newTestCA(t)
	backend := startFakeRESP(t, "a", nil)
	tests := []struct {
		name    string
		backend string
		dial    func(t *testing.T, p *testProxy) net.Conn
		send    string
		want    string // every line the client reads
		wantErr string // in the session's log line
	}{{
		name:    "plaintext RESP",
		backend: backend.addr,
		dial:    func(t *testing.T, p *testProxy) net.Conn { return p.dial(t) },
		send:    respCommand("PING") + respCommand("AUTH", "secret"),
		want:    strings.Repeat("-ERR TLS is required on this port (leproxy)\r\n", 2),
		wantErr: "not a TLS handshake (first byte 0x2a, redis command ping)",
	}, {
		name:    "plaintext inline",
		backend: backend.addr,
		dial:    func(t *testing.T, p *testProxy) net.Conn { return p.dial(t) },
		send:    "PING\r\n",
		want:    "-ERR TLS is required on this port (leproxy)\r\n",
		wantErr: "not a TLS handshake (first byte 0x50, redis command ping)",
	}, {
		name:    "unknown server name",
		backend: backend.addr,
		dial:    func(t *testing.T, p *testProxy) net.Conn { return tfDialTLS(t, p, "c.test", "a.test") },
		send:    respCommand("HELLO", "3") + respCommand("GET", "k"),
		want:    strings.Repeat("-ERR no route for server name c.test (leproxy)\r\n", 2),
		wantErr: `no route for server name "c.test"`,
	}, {
		name:    "backend down",
		backend: tfClosedAddr(t),
		dial:    func(t *testing.T, p *testProxy) net.Conn { return tfDialTLS(t, p, "a.test", "a.test") },
		send:    respCommand("PING"),
		want:    "-ERR could not connect to the backend of a.test (leproxy)\r\n",
		wantErr: "dialing backend",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tfProxy(t, ca, "redis", "a.test", Route{Host: "a.test", Backend: tt.backend})
			c := tt.dial(t, p)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			got, err := tfReadAll(t, c)
			c.Close()
			if got != tt.want {
				t.Errorf("client read %q, want %q", got, tt.want)
			}
			if _, isTLS := c.(*tls.Conn); isTLS && err != nil {
				t.Errorf("read error %v, want a clean close_notify EOF", err)
			}
			if msg := tfSessionError(t, p); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

// TestRedisRedirections checks the rewriting wired into sessions: MOVED
// and CLUSTER SLOTS name the routes and the listener's port, not the
// backends. The real cluster is in redis_integration_test.go.
func TestRedisRedirections(t *testing.T) {
	ca := newTestCA(t)
	n2 := startFakeRESP(t, "n2", nil)
	var n2host, n2port string
	n1 := startFakeRESP(t, "n1", func(name, sub string) string {
		switch name + " " + sub {
		case "get k":
			return "-MOVED 42 " + n2.addr + "\r\n"
		case "get unrouted":
			return "-ASK 7 10.255.0.1:6379\r\n"
		case "cluster slots":
			return fmt.Sprintf("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$%d\r\n%s\r\n:%s\r\n", len(n2host), n2host, n2port)
		}
		return ""
	})
	n2host, n2port, _ = net.SplitHostPort(n2.addr)
	p := tfProxy(t, ca, "redis", "", Route{Host: "n1.test", Backend: n1.addr}, Route{Host: "n2.test", Backend: n2.addr})
	_, lport, _ := net.SplitHostPort(p.addr)

	tc := tfDialTLS(t, p, "n1.test", "n1.test")
	br := bufio.NewReader(tc)
	if got, want := redisDo(t, tc, br, "GET", "k"), "-MOVED 42 n2.test:"+lport+"\r\n"; got != want {
		t.Errorf("MOVED: got %q, want %q", got, want)
	}
	if got, want := redisDo(t, tc, br, "GET", "unrouted"), "-ERR leproxy has no route to cluster node 10.255.0.1:6379 (ASK 7)\r\n"; got != want {
		t.Errorf("ASK to an unrouted node: got %q, want %q", got, want)
	}
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc, respCommand("CLUSTER", "SLOTS"))
	want := fmt.Sprintf("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$7\r\nn2.test\r\n:%s\r\n", lport)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Errorf("CLUSTER SLOTS: got %q (%v), want %q", got, err, want)
	}
	var warned bool
	waitFor(t, "warning about the unrouted node", func() bool {
		for _, r := range p.logs.records(t, "redis cluster node has no route on this listener") {
			warned = warned || r["node"] == "10.255.0.1:6379"
		}
		return warned
	})
}

// FuzzRedisRefuse checks that answering a refused client never panics,
// answers at most redisRefuseCommands commands, and reads a bounded
// amount.
func FuzzRedisRefuse(f *testing.F) {
	f.Add([]byte(respCommand("PING") + "INFO\r\n"))
	f.Add([]byte("*1\r\n$4\r\nPI"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &fuzzConn{r: strings.NewReader(string(in))}
		first := refuseRedis(t.Context(), c, "x")
		if n := strings.Count(c.w.String(), "-ERR x (leproxy)\r\n"); n < 1 || n > redisRefuseCommands {
			t.Fatalf("answered %d times, want 1 to %d", n, redisRefuseCommands)
		}
		if len(first) > respCmdWord+1 {
			t.Fatalf("first command name %q too long", first)
		}
	})
}

// fuzzConn is a net.Conn reading from r and writing to w.
type fuzzConn struct {
	net.Conn
	r io.Reader
	w strings.Builder
}

func (c *fuzzConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c *fuzzConn) SetReadDeadline(time.Time) error    { return nil }
func (c *fuzzConn) SetDeadline(time.Time) error        { return nil }
func (c *fuzzConn) SetWriteDeadline(t time.Time) error { return nil }
