package redis

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
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
	dbtest.ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) {
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

// do sends a command and reads one reply line (simple replies only).
func do(t testing.TB, c net.Conn, br *bufio.Reader, args ...string) string {
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
	ca := dbtest.NewCA(t)
	a := startFakeRESP(t, "a", nil)
	b := startFakeRESP(t, "b", nil)
	p := dbtest.StartProtocol(t, ca, "redis", "a.test", dbproxy.Route{Host: "a.test", Backend: a.addr}, dbproxy.Route{Host: "b.test", Backend: b.addr})
	tests := []struct{ sni, verify, want string }{
		{"a.test", "a.test", "+ping@a\r\n"},
		{"b.test", "b.test", "+ping@b\r\n"},
		{"", "a.test", "+ping@a\r\n"}, // no SNI: the default
	}
	for _, tt := range tests {
		t.Run("sni="+tt.sni, func(t *testing.T) {
			tc := p.DialTLS(t, tt.sni, tt.verify)
			if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
				t.Errorf("negotiated ALPN %q, want none", got)
			}
			if got := do(t, tc, bufio.NewReader(tc), "PING"); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedisRefusals(t *testing.T) {
	ca := dbtest.NewCA(t)
	backend := startFakeRESP(t, "a", nil)
	tests := []struct {
		name    string
		backend string
		dial    func(t *testing.T, p *dbtest.Proxy) net.Conn
		send    string
		want    string // every line the client reads
		wantErr string // in the session's log line
	}{{
		name:    "plaintext RESP",
		backend: backend.addr,
		dial:    func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.Dial(t) },
		send:    respCommand("PING") + respCommand("AUTH", "secret"),
		want:    strings.Repeat("-ERR TLS is required on this port (leproxy)\r\n", 2),
		wantErr: "not a TLS handshake (first byte 0x2a, redis command ping)",
	}, {
		name:    "plaintext inline",
		backend: backend.addr,
		dial:    func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.Dial(t) },
		send:    "PING\r\n",
		want:    "-ERR TLS is required on this port (leproxy)\r\n",
		wantErr: "not a TLS handshake (first byte 0x50, redis command ping)",
	}, {
		name:    "unknown server name",
		backend: backend.addr,
		dial:    func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.DialTLS(t, "c.test", "a.test") },
		send:    respCommand("HELLO", "3") + respCommand("GET", "k"),
		want:    strings.Repeat("-ERR no route for server name c.test (leproxy)\r\n", 2),
		wantErr: `no route for server name "c.test"`,
	}, {
		name:    "backend down",
		backend: dbtest.ClosedAddr(t),
		dial:    func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.DialTLS(t, "a.test", "a.test") },
		send:    respCommand("PING"),
		want:    "-ERR could not connect to the backend of a.test (leproxy)\r\n",
		wantErr: "dialing backend",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "redis", "a.test", dbproxy.Route{Host: "a.test", Backend: tt.backend})
			c := tt.dial(t, p)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			got, err := dbtest.ReadAll(t, c)
			c.Close()
			if got != tt.want {
				t.Errorf("client read %q, want %q", got, tt.want)
			}
			if _, isTLS := c.(*tls.Conn); isTLS && err != nil {
				t.Errorf("read error %v, want a clean close_notify EOF", err)
			}
			if msg := p.SessionError(t); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

// TestRedisRedirections checks the rewriting wired into sessions: MOVED
// and CLUSTER SLOTS name the routes and the listener's port, not the
// backends. The real cluster is in redis_integration_test.go.
func TestRedisRedirections(t *testing.T) {
	ca := dbtest.NewCA(t)
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
	p := dbtest.StartProtocol(t, ca, "redis", "", dbproxy.Route{Host: "n1.test", Backend: n1.addr}, dbproxy.Route{Host: "n2.test", Backend: n2.addr})
	_, lport, _ := net.SplitHostPort(p.Addr)

	tc := p.DialTLS(t, "n1.test", "n1.test")
	br := bufio.NewReader(tc)
	if got, want := do(t, tc, br, "GET", "k"), "-MOVED 42 n2.test:"+lport+"\r\n"; got != want {
		t.Errorf("MOVED: got %q, want %q", got, want)
	}
	if got, want := do(t, tc, br, "GET", "unrouted"), "-ERR leproxy has no route to cluster node 10.255.0.1:6379 (ASK 7)\r\n"; got != want {
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
	dbtest.WaitFor(t, "warning about the unrouted node", func() bool {
		for _, r := range p.Logs.Records(t, "redis cluster node has no route on this listener") {
			warned = warned || r["node"] == "10.255.0.1:6379"
		}
		return warned
	})
}

// TestRedisRedirectionsAfterReload checks that a reload reaches the
// cluster node map: a route renamed, added or removed changes how the
// next session's redirections are rewritten. The backends are IP
// addresses, whose map no timer rebuilds.
func TestRedisRedirectionsAfterReload(t *testing.T) {
	ca := dbtest.NewCA(t)
	b := startFakeRESP(t, "b", nil)
	c := startFakeRESP(t, "c", nil)
	a := startFakeRESP(t, "a", func(name, sub string) string {
		switch name + " " + sub {
		case "get kb":
			return "-MOVED 1 " + b.addr + "\r\n"
		case "get kc":
			return "-MOVED 2 " + c.addr + "\r\n"
		}
		return ""
	})
	routeA := dbproxy.Route{Host: "a.test", Backend: a.addr}
	p := dbtest.StartProtocol(t, ca, "redis", "", routeA, dbproxy.Route{Host: "b1.test", Backend: b.addr})
	_, lport, _ := net.SplitHostPort(p.Addr)
	unrouted := func(addr string, slot int) string {
		return fmt.Sprintf("-ERR leproxy has no route to cluster node %s (MOVED %d)\r\n", addr, slot)
	}
	check := func(step, wantB, wantC string) {
		t.Helper()
		tc := p.DialTLS(t, "a.test", "a.test")
		defer tc.Close()
		br := bufio.NewReader(tc)
		if got := do(t, tc, br, "GET", "kb"); got != wantB {
			t.Errorf("%s: MOVED to b: got %q, want %q", step, got, wantB)
		}
		if got := do(t, tc, br, "GET", "kc"); got != wantC {
			t.Errorf("%s: MOVED to c: got %q, want %q", step, got, wantC)
		}
	}
	check("before the reload", "-MOVED 1 b1.test:"+lport+"\r\n", unrouted(c.addr, 2))

	// b's route renamed, c's added.
	if err := p.Srv.SetRoutes([]dbproxy.Route{routeA,
		{Host: "b2.test", Backend: b.addr}, {Host: "c.test", Backend: c.addr}}, ""); err != nil {
		t.Fatal(err)
	}
	check("after renaming b and adding c", "-MOVED 1 b2.test:"+lport+"\r\n", "-MOVED 2 c.test:"+lport+"\r\n")

	// Both removed.
	if err := p.Srv.SetRoutes([]dbproxy.Route{routeA}, ""); err != nil {
		t.Fatal(err)
	}
	check("after removing b and c", unrouted(b.addr, 1), unrouted(c.addr, 2))
}

// FuzzRedisRefuse checks that answering a refused client never panics,
// answers at most refuseCommands commands, and reads a bounded
// amount.
func FuzzRedisRefuse(f *testing.F) {
	f.Add([]byte(respCommand("PING") + "INFO\r\n"))
	f.Add([]byte("*1\r\n$4\r\nPI"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &fuzzConn{r: strings.NewReader(string(in))}
		first := refuse(t.Context(), c, "x")
		if n := strings.Count(c.w.String(), "-ERR x (leproxy)\r\n"); n < 1 || n > refuseCommands {
			t.Fatalf("answered %d times, want 1 to %d", n, refuseCommands)
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

// TestRedisCloseWrite checks the half-close of the session's wrapped
// connections: close_notify and FIN under TLS, so that the peer reads a
// clean EOF while it can still send.
func TestRedisCloseWrite(t *testing.T) {
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "a.test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(tc); err != nil {
			served <- fmt.Errorf("reading to EOF: %w", err)
			return
		}
		_, err = io.WriteString(tc, "after EOF")
		served <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := ca.ClientTLS(c, "a.test", "a.test")
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	cc := &clientConn{Conn: tc}
	if err := cc.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if got, err := io.ReadAll(tc); err != nil || string(got) != "after EOF" {
		t.Errorf("after the half-close: read %q, %v; want the peer's answer and EOF", got, err)
	}
	if err := <-served; err != nil {
		t.Errorf("peer: %v", err)
	}

	// TLS before its handshake cannot half-close; a connection without
	// CloseWrite is left to the session's close.
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if err := (&backendConn{Conn: tls.Client(p1, &tls.Config{})}).CloseWrite(); err == nil {
		t.Error("CloseWrite of TLS before its handshake succeeded")
	}
	if err := (&backendConn{Conn: p1}).CloseWrite(); err != nil {
		t.Errorf("CloseWrite of a net.Pipe: %v, want nil", err)
	}
}
