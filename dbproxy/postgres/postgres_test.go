package dbproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// twoBackends starts backends "a" (4-byte cancel key, protocol 3.0 style)
// and "b" (32-byte key, as PostgreSQL 18 with protocol 3.2) and a proxy
// routing a.test and b.test to them, a.test being the default.
func twoBackends(t *testing.T, mod func(*Config)) (*testProxy, *fakeBackend, *fakeBackend) {
	t.Helper()
	ca := newTestCA(t)
	a := startFakeBackend(t, &fakeBackend{name: "a", pid: 101, key: []byte{1, 2, 3, 4}})
	b := startFakeBackend(t, &fakeBackend{name: "b", pid: 202, key: bytes.Repeat([]byte{0xb}, 32)})
	cfg := Config{Routes: []Route{a.route("a.test"), b.route("b.test")}, Default: "a.test"}
	if mod != nil {
		mod(&cfg)
	}
	return startProxy(t, ca, cfg), a, b
}

func TestPostgresHandshake(t *testing.T) {
	startup := startupBytes(3, 0, "user", "alice", "database", "app")
	tests := []struct {
		name      string
		plaintext bool // the default route allows plaintext
		// run negotiates, sends whatever ends the client's part and
		// returns the connection the answer arrives on.
		run         func(t *testing.T, conn net.Conn, ca *testCA) net.Conn
		wantBackend string // the query reaches this backend…
		wantTLS     bool   // …over TLS to the proxy
		wantCode    string // …or this SQLSTATE comes back
		wantMsg     string // with this in its message
	}{{
		name: "SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "b.test", "b.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "SSLRequest with ALPN postgresql",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "a.test", "a.test", "postgresql")
			if got := tc.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "postgresql" {
				t.Errorf("ALPN: got %q, want postgresql", got)
			}
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "server name in other case",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "B.Test", "b.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "direct TLS with ALPN",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := clientTLS(conn, ca, "b.test", "b.test", "postgresql")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "direct TLS without ALPN",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := clientTLS(conn, ca, "b.test", "b.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantCode: "08P01", wantMsg: `ALPN protocol "postgresql"`,
	}, {
		name: "GSSENCRequest then SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			mustWrite(t, conn, requestBytes(gssEncRequestCode))
			if got := readByte(t, conn); got != 'N' {
				t.Fatalf("GSSENCRequest answer: got %q, want 'N'", got)
			}
			tc := sslRequest(t, conn, ca, "a.test", "a.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "GSSENCRequest then plaintext",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			mustWrite(t, conn, requestBytes(gssEncRequestCode))
			if got := readByte(t, conn); got != 'N' {
				t.Fatalf("GSSENCRequest answer: got %q, want 'N'", got)
			}
			mustWrite(t, conn, startup)
			return conn
		},
		wantCode: "28000", wantMsg: "TLS is required for a.test",
	}, {
		name: "two GSSENCRequests",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			mustWrite(t, conn, requestBytes(gssEncRequestCode))
			readByte(t, conn)
			mustWrite(t, conn, requestBytes(gssEncRequestCode))
			return conn
		},
		wantCode: "08P01", wantMsg: "unexpected GSSENCRequest",
	}, {
		name: "plaintext refused",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			mustWrite(t, conn, startup)
			return conn
		},
		wantCode: "28000", wantMsg: "TLS is required for a.test",
	}, {
		name:      "plaintext allowed",
		plaintext: true,
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			mustWrite(t, conn, startup)
			return conn
		},
		wantBackend: "a",
	}, {
		name:      "TLS still routes by SNI when plaintext is allowed",
		plaintext: true,
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "b.test", "b.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "bytes pipelined after SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			// One write: the startup packet is in the proxy's socket
			// before it answers the SSLRequest.
			mustWrite(t, conn, append(requestBytes(sslRequestCode), startup...))
			return conn
		},
		wantCode: "08P01", wantMsg: "received unencrypted data after SSL request",
	}, {
		name: "second SSLRequest inside TLS",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "a.test", "a.test")
			mustWrite(t, tc, requestBytes(sslRequestCode))
			return tc
		},
		wantCode: "08P01", wantMsg: "received more than one SSLRequest",
	}, {
		name: "unknown server name",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			// The handshake completes with the default's certificate…
			tc := sslRequest(t, conn, ca, "c.test", "a.test")
			mustWrite(t, tc, startup)
			return tc
		},
		// …and the client is told, never routed.
		wantCode: "08004", wantMsg: "no route for server name c.test",
	}, {
		name: "no server name gets the default",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "", "a.test")
			mustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "protocol 3.2",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "b.test", "b.test")
			mustWrite(t, tc, startupBytes(3, 2, "user", "alice"))
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "protocol 2.0",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "a.test", "a.test")
			mustWrite(t, tc, startupBytes(2, 0, "user", "alice"))
			return tc
		},
		wantCode: "0A000", wantMsg: "unsupported frontend protocol 2.0",
	}, {
		name: "oversized startup packet",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "a.test", "a.test")
			mustWrite(t, tc, startupBytes(3, 0, "user", strings.Repeat("x", maxStartupPacket)))
			return tc
		},
		wantCode: "08P01", wantMsg: "invalid length of startup packet",
	}, {
		name: "malformed startup packet",
		run: func(t *testing.T, conn net.Conn, ca *testCA) net.Conn {
			tc := sslRequest(t, conn, ca, "a.test", "a.test")
			bad := startupBytes(3, 0, "user")
			mustWrite(t, tc, bad)
			return tc
		},
		wantCode: "08P01", wantMsg: "invalid startup packet layout",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, a, b := twoBackends(t, func(cfg *Config) { cfg.Routes[0].AllowPlaintext = tt.plaintext })
			conn := tt.run(t, p.dial(t), p.ca)
			fe := pgproto3.NewFrontend(conn, conn)
			res := readStartup(t, fe)
			if tt.wantCode != "" {
				if res.err == nil {
					t.Fatalf("got no ErrorResponse (read error %v), want SQLSTATE %s", res.readErr, tt.wantCode)
				}
				if res.err.Code != tt.wantCode || !strings.Contains(res.err.Message, tt.wantMsg) || res.err.Severity != "FATAL" {
					t.Errorf("got %s %s %q, want FATAL %s containing %q", res.err.Severity, res.err.Code, res.err.Message, tt.wantCode, tt.wantMsg)
				}
				// Then the proxy closes, and no backend was involved.
				if _, err := fe.Receive(); err == nil {
					t.Error("connection still open after the ErrorResponse")
				}
				if n := a.accepted.Load() + b.accepted.Load(); n != 0 {
					t.Errorf("backends got %d connections, want 0", n)
				}
				return
			}
			if res.err != nil || res.readErr != nil {
				t.Fatalf("startup failed: %+v", res)
			}
			want := map[string]*fakeBackend{"a": a, "b": b}[tt.wantBackend]
			if res.pid != want.pid || !bytes.Equal(res.key, want.key) {
				t.Errorf("BackendKeyData: got %d %x, want %d %x", res.pid, res.key, want.pid, want.key)
			}
			if got, want := query(t, fe, "select 1"), tt.wantBackend+":false:select 1"; got != want {
				t.Errorf("query went to %q, want %q", got, want)
			}
			params := <-want.startups
			if params["user"] != "alice" {
				t.Errorf("backend got startup parameters %v, want user alice", params)
			}
			if _, isTLS := conn.(*tls.Conn); isTLS != tt.wantTLS {
				t.Errorf("TLS to proxy: got %t, want %t", isTLS, tt.wantTLS)
			}
		})
	}
}

// A client that pipelines nothing but sends its SSLRequest in pieces is
// not mistaken for one that pipelines.
func TestPostgresSSLRequestInPieces(t *testing.T) {
	p, _, _ := twoBackends(t, nil)
	conn := p.dial(t)
	req := requestBytes(sslRequestCode)
	mustWrite(t, conn, req[:3])
	time.Sleep(20 * time.Millisecond)
	mustWrite(t, conn, req[3:])
	if got := readByte(t, conn); got != 'S' {
		t.Fatalf("SSLRequest answer: got %q, want 'S'", got)
	}
}

func TestPostgresPlaintextHandshakeKeepsTCP(t *testing.T) {
	// With plain TCP on both sides the pump's io.Copy can splice: the
	// handshake must hand back the *net.TCPConn themselves.
	ca := newTestCA(t)
	a := startFakeBackend(t, &fakeBackend{name: "a", pid: 1, key: []byte{1, 2, 3, 4}})
	r := a.route("a.test")
	r.AllowPlaintext = true
	proto, _ := Lookup("postgres")
	srv, err := New(Config{Protocol: proto, Routes: []Route{r}, Default: "a.test", GetCertificate: ca.certSource(t, "a.test")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(startupBytes(3, 0, "user", "u"))
		io.Copy(io.Discard, c)
	}()
	client, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sess := &Session{Logger: slog.New(slog.DiscardHandler), srv: srv, client: client}
	defer sess.closeAll()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, b, err := proto.Handshake(ctx, client, sess)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*net.TCPConn); !ok {
		t.Errorf("client side: got %T, want *net.TCPConn", c)
	}
	if _, ok := b.(*net.TCPConn); !ok {
		t.Errorf("backend side: got %T, want *net.TCPConn", b)
	}
}

func TestPostgresAsyncMessageAfterReady(t *testing.T) {
	// A message the backend sends right behind ReadyForQuery, read along
	// with it, reaches the client before anything the pump copies.
	ca := newTestCA(t)
	notice, _ := (&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello from a"}).Encode(nil)
	a := startFakeBackend(t, &fakeBackend{name: "a", pid: 1, key: []byte{1, 2, 3, 4}, asyncAfterReady: notice})
	p := startProxy(t, ca, Config{Routes: []Route{a.route("a.test")}})
	conn := sslRequest(t, p.dial(t), ca, "a.test", "a.test")
	mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
	fe := pgproto3.NewFrontend(conn, conn)
	if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := msg.(*pgproto3.NoticeResponse); !ok || n.Message != "hello from a" {
		t.Fatalf("got %#v, want the NoticeResponse", msg)
	}
	if got := query(t, fe, "x"); got != "a:false:x" {
		t.Errorf("query: got %q, want a:false:x", got)
	}
}

func TestPostgresPasswordRelay(t *testing.T) {
	tests := []struct {
		password string
		wantCode string
		// pipelined sends a query in the same write as the password,
		// before the backend's ReadyForQuery.
		pipelined bool
	}{
		{"sesame", "", false},
		{"wrong", "28P01", false},
		{"sesame", "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s pipelined=%t", tt.password, tt.pipelined), func(t *testing.T) {
			ca := newTestCA(t)
			a := startFakeBackend(t, &fakeBackend{name: "a", pid: 1, key: []byte{1, 2, 3, 4}, password: "sesame"})
			p := startProxy(t, ca, Config{Routes: []Route{a.route("a.test")}})
			conn := sslRequest(t, p.dial(t), ca, "a.test", "a.test")
			mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
			fe := pgproto3.NewFrontend(conn, conn)
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
				t.Fatalf("got %T, want AuthenticationCleartextPassword", msg)
			}
			fe.Send(&pgproto3.PasswordMessage{Password: tt.password})
			if tt.pipelined {
				fe.Send(&pgproto3.Query{String: "early"})
			}
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			res := readStartup(t, fe)
			if tt.pipelined && res.err == nil && res.readErr == nil {
				// The early query was answered after the startup.
				for {
					msg, err := fe.Receive()
					if err != nil {
						t.Fatalf("reading the early query's answer: %v", err)
					}
					if cc, ok := msg.(*pgproto3.CommandComplete); ok {
						if got := string(cc.CommandTag); got != "a:false:early" {
							t.Errorf("early query: got %q, want a:false:early", got)
						}
						break
					}
				}
			}
			switch {
			case tt.wantCode == "" && (res.err != nil || res.readErr != nil):
				t.Fatalf("got %+v, want a session", res)
			case tt.wantCode != "" && (res.err == nil || res.err.Code != tt.wantCode):
				t.Fatalf("got %+v, want the backend's SQLSTATE %s", res, tt.wantCode)
			}
		})
	}
}

func TestPostgresBackendFailures(t *testing.T) {
	ca := newTestCA(t)
	otherCA := newTestCA(t)
	goodCert, _, _ := ca.issue(t, "127.0.0.1")
	strangerCert, _, _ := otherCA.issue(t, "127.0.0.1")
	verified := startFakeBackend(t, &fakeBackend{name: "v", pid: 1, key: []byte{1, 2, 3, 4}, cert: &goodCert})
	stranger := startFakeBackend(t, &fakeBackend{name: "s", pid: 2, key: []byte{1, 2, 3, 4}, cert: &strangerCert})
	plain := startFakeBackend(t, &fakeBackend{name: "p", pid: 3, key: []byte{1, 2, 3, 4}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()

	tests := []struct {
		name     string
		route    Route
		wantTag  string // the session works and queries answer this
		wantCode string
	}{
		{"verify", Route{Backend: verified.addr, TLS: TLSVerify, RootCAs: ca.pool}, "v:true:q", ""},
		{"insecure", Route{Backend: stranger.addr, TLS: TLSInsecure}, "s:true:q", ""},
		{"verify fails", Route{Backend: stranger.addr, TLS: TLSVerify, RootCAs: ca.pool}, "", "08001"},
		{"backend without TLS", Route{Backend: plain.addr, TLS: TLSVerify, RootCAs: ca.pool}, "", "08001"},
		{"backend down", Route{Backend: down}, "", "08001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.route.Host = "db.test"
			p := startProxy(t, ca, Config{Routes: []Route{tt.route}})
			conn := sslRequest(t, p.dial(t), ca, "db.test", "db.test")
			mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
			fe := pgproto3.NewFrontend(conn, conn)
			res := readStartup(t, fe)
			if tt.wantCode != "" {
				if res.err == nil || res.err.Code != tt.wantCode || !strings.Contains(res.err.Message, "db.test") {
					t.Fatalf("got %+v, want SQLSTATE %s naming db.test", res, tt.wantCode)
				}
				if strings.Contains(res.err.Message, tt.route.Backend) {
					t.Errorf("message %q shows the backend address to the client", res.err.Message)
				}
				if _, err := fe.Receive(); err == nil {
					t.Error("connection still open after the ErrorResponse")
				}
				return
			}
			if res.err != nil || res.readErr != nil {
				t.Fatalf("startup failed: %+v", res)
			}
			if got := query(t, fe, "q"); got != tt.wantTag {
				t.Errorf("query: got %q, want %q", got, tt.wantTag)
			}
		})
	}
}

func TestPostgresCancel(t *testing.T) {
	p, a, b := twoBackends(t, nil)
	ca := p.ca
	// One session on each backend.
	sessions := map[string]*pgproto3.Frontend{}
	var aConn net.Conn
	for _, host := range []string{"a.test", "b.test"} {
		conn := sslRequest(t, p.dial(t), ca, host, host)
		if host == "a.test" {
			aConn = conn
		}
		mustWrite(t, conn, startupBytes(3, 2, "user", "u"))
		fe := pgproto3.NewFrontend(conn, conn)
		if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
			t.Fatalf("startup %s: %+v", host, res)
		}
		sessions[host] = fe
	}
	waitFor(t, "two cancel keys", func() bool { return p.proto.cancels.len() == 2 })

	tests := []struct {
		name   string
		pid    uint32
		key    []byte
		viaTLS string // "" for a plaintext cancel, else the SNI
		want   *fakeBackend
	}{
		{"plaintext to a", a.pid, a.key, "", a},
		{"plaintext to b", b.pid, b.key, "", b},
		{"over TLS to b", b.pid, b.key, "b.test", b},
		{"over TLS with the other name", b.pid, b.key, "a.test", b},
		{"unknown key", b.pid, a.key, "", nil},
		{"right key, wrong pid", a.pid + 1, a.key, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeA, beforeB := a.accepted.Load(), b.accepted.Load()
			var conn net.Conn = p.dial(t)
			if tt.viaTLS != "" {
				conn = sslRequest(t, conn, ca, tt.viaTLS, tt.viaTLS)
			}
			mustWrite(t, conn, cancelBytes(tt.pid, tt.key))
			// The proxy closes once the backend has the request, as
			// PostgreSQL does, and says nothing.
			if n, err := io.Copy(io.Discard, conn); n != 0 || err != nil {
				t.Fatalf("after cancel: read %d bytes, %v; want EOF", n, err)
			}
			gotA, gotB := a.accepted.Load()-beforeA, b.accepted.Load()-beforeB
			switch tt.want {
			case nil:
				if gotA+gotB != 0 {
					t.Errorf("backends got %d and %d connections, want none", gotA, gotB)
				}
			case a, b:
				other, gotOther, gotWant := b, gotB, gotA
				if tt.want == b {
					other, gotOther, gotWant = a, gotA, gotB
				}
				if gotWant != 1 || gotOther != 0 {
					t.Errorf("%s got %d connections and %s %d; want 1 and 0", tt.want.name, gotWant, other.name, gotOther)
				}
				select {
				case k := <-tt.want.cancels:
					if k.pid != tt.pid || k.key != string(tt.key) {
						t.Errorf("backend got cancel %d %x, want %d %x", k.pid, k.key, tt.pid, tt.key)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("backend got no cancel request")
				}
			}
		})
	}

	// A session's key is forgotten when it ends.
	fe := sessions["a.test"]
	fe.Send(&pgproto3.Terminate{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	aConn.Close()
	waitFor(t, "a's cancel key to go", func() bool { return p.proto.cancels.len() == 1 })
	if _, ok := p.proto.cancels.lookup(a.pid, a.key); ok {
		t.Error("a's key is still known after its session ended")
	}
}

func TestPostgresTooManyConnections(t *testing.T) {
	p, _, _ := twoBackends(t, func(cfg *Config) { cfg.MaxConns = 1 })
	first := sslRequest(t, p.dial(t), p.ca, "a.test", "a.test")
	defer first.Close()
	second := p.dial(t)
	mustWrite(t, second, requestBytes(sslRequestCode))
	fe := pgproto3.NewFrontend(second, second)
	res := readStartup(t, fe)
	if res.err == nil || res.err.Code != "53300" {
		t.Fatalf("got %+v, want SQLSTATE 53300", res)
	}
	if got := p.srv.Stats().Refused; got != 1 {
		t.Errorf("Refused: got %d, want 1", got)
	}
	// The first session is unaffected.
	mustWrite(t, first, startupBytes(3, 0, "user", "u"))
	fe1 := pgproto3.NewFrontend(first, first)
	if res := readStartup(t, fe1); res.err != nil || res.readErr != nil {
		t.Fatalf("first session: %+v", res)
	}
	if got := query(t, fe1, "q"); got != "a:false:q" {
		t.Errorf("query: got %q, want a:false:q", got)
	}
}

func TestPostgresHandshakeTimeout(t *testing.T) {
	p, _, _ := twoBackends(t, func(cfg *Config) { cfg.HandshakeTimeout = 200 * time.Millisecond })
	conn := p.dial(t)
	mustWrite(t, conn, []byte{0, 0}) // half a length word, then nothing
	// The proxy gives up and closes; io.Copy returns at EOF.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("got %v, want the proxy to close the connection", err)
	}
	waitFor(t, "the session-end log line", func() bool { return len(p.logs.records(t, "session end")) == 1 })
	rec := p.logs.records(t, "session end")[0]
	if msg, _ := rec["error"].(string); !strings.Contains(msg, "timeout") {
		t.Errorf("logged error %q, want a timeout", msg)
	}
}

func TestPostgresRefuseUnknownProtocol(t *testing.T) {
	var buf bytes.Buffer
	(&postgres{}).Refuse(&writerConn{w: &buf}, errors.New("going away"))
	fe := pgproto3.NewFrontend(&buf, io.Discard)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := msg.(*pgproto3.ErrorResponse); !ok || e.Code != "08P01" || e.Message != "going away" {
		t.Errorf("got %#v, want 08P01 going away", msg)
	}
}

// writerConn is a net.Conn that only writes, to w.
type writerConn struct {
	net.Conn
	w io.Writer
}

func (c *writerConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func TestPostgresCancelToTLSBackend(t *testing.T) {
	// The cancel goes to the backend the way the route says: SSLRequest
	// and TLS first.
	ca := newTestCA(t)
	cert, _, _ := ca.issue(t, "127.0.0.1")
	fb := startFakeBackend(t, &fakeBackend{name: "a", pid: 9, key: []byte{9, 9, 9, 9}, cert: &cert})
	r := fb.route("a.test")
	r.TLS, r.RootCAs = TLSVerify, ca.pool
	p := startProxy(t, ca, Config{Routes: []Route{r}})
	conn := sslRequest(t, p.dial(t), ca, "a.test", "a.test")
	mustWrite(t, conn, startupBytes(3, 0, "user", "u"))
	fe := pgproto3.NewFrontend(conn, conn)
	if res := readStartup(t, fe); res.err != nil || res.readErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	waitFor(t, "the cancel key", func() bool { return p.proto.cancels.len() == 1 })
	c := p.dial(t)
	mustWrite(t, c, cancelBytes(fb.pid, fb.key))
	io.Copy(io.Discard, c)
	select {
	case k := <-fb.cancels:
		if k.pid != fb.pid || k.key != string(fb.key) {
			t.Errorf("backend got cancel %d %x", k.pid, k.key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend got no cancel request")
	}
	if got := query(t, fe, "q"); got != "a:true:q" {
		t.Errorf("query: got %q, want a:true:q", got)
	}
}
