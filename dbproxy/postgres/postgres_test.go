package postgres

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
)

// testProxy is a postgres proxy under test and its protocol value, whose
// cancel table tests look at.
type testProxy struct {
	*dbtest.Proxy
	proto *protocol
}

// startProxy starts a postgres Server for cfg; see dbtest.StartProxy.
func startProxy(t testing.TB, ca *dbtest.CA, cfg dbproxy.Config) *testProxy {
	t.Helper()
	proto, ok := dbproxy.Lookup("postgres")
	if !ok {
		t.Fatal("postgres is not registered")
	}
	cfg.Protocol = proto
	return &testProxy{Proxy: dbtest.StartProxy(t, ca, cfg), proto: proto.(*protocol)}
}

// twoBackends starts backends "a" (4-byte cancel key, protocol 3.0 style)
// and "b" (32-byte key, as PostgreSQL 18 with protocol 3.2) and a proxy
// routing a.test and b.test to them, a.test being the default.
func twoBackends(t *testing.T, mod func(*dbproxy.Config)) (*testProxy, *pgtest.Backend, *pgtest.Backend) {
	t.Helper()
	ca := dbtest.NewCA(t)
	a := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 101, Key: []byte{1, 2, 3, 4}})
	b := pgtest.StartBackend(t, &pgtest.Backend{Name: "b", PID: 202, Key: bytes.Repeat([]byte{0xb}, 32)})
	cfg := dbproxy.Config{Routes: []dbproxy.Route{a.Route("a.test"), b.Route("b.test")}, Default: "a.test"}
	if mod != nil {
		mod(&cfg)
	}
	return startProxy(t, ca, cfg), a, b
}

func TestRegistered(t *testing.T) {
	for _, name := range []string{"postgres", "postgresql", "PostgreSQL"} {
		proto, ok := dbproxy.Lookup(name)
		if _, isPostgres := proto.(*protocol); !ok || !isPostgres {
			t.Errorf("Lookup(%q) = %T, %t; want the PostgreSQL protocol", name, proto, ok)
		}
		if c, ok := dbproxy.Canonical(name); !ok || c != "postgres" {
			t.Errorf("Canonical(%q) = %q, %t; want postgres", name, c, ok)
		}
	}
}

func TestPostgresHandshake(t *testing.T) {
	startup := pgtest.StartupBytes(3, 0, "user", "alice", "database", "app")
	tests := []struct {
		name      string
		plaintext bool // the default route allows plaintext
		// run negotiates, sends whatever ends the client's part and
		// returns the connection the answer arrives on.
		run         func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn
		wantBackend string // the query reaches this backend…
		wantTLS     bool   // …over TLS to the proxy
		wantCode    string // …or this SQLSTATE comes back
		wantMsg     string // with this in its message
	}{{
		name: "SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "b.test", "b.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "SSLRequest with ALPN postgresql",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test", "postgresql")
			if got := tc.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "postgresql" {
				t.Errorf("ALPN: got %q, want postgresql", got)
			}
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "server name in other case",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "B.Test", "b.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "direct TLS with ALPN",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := ca.ClientTLS(conn, "b.test", "b.test", "postgresql")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "direct TLS without ALPN",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := ca.ClientTLS(conn, "b.test", "b.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantCode: "08P01", wantMsg: `ALPN protocol "postgresql"`,
	}, {
		name: "GSSENCRequest then SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			dbtest.MustWrite(t, conn, pgtest.RequestBytes(gssEncRequestCode))
			if got := pgtest.ReadByte(t, conn); got != 'N' {
				t.Fatalf("GSSENCRequest answer: got %q, want 'N'", got)
			}
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "GSSENCRequest then plaintext",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			dbtest.MustWrite(t, conn, pgtest.RequestBytes(gssEncRequestCode))
			if got := pgtest.ReadByte(t, conn); got != 'N' {
				t.Fatalf("GSSENCRequest answer: got %q, want 'N'", got)
			}
			dbtest.MustWrite(t, conn, startup)
			return conn
		},
		wantCode: "28000", wantMsg: "TLS is required for a.test",
	}, {
		name: "two GSSENCRequests",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			dbtest.MustWrite(t, conn, pgtest.RequestBytes(gssEncRequestCode))
			pgtest.ReadByte(t, conn)
			dbtest.MustWrite(t, conn, pgtest.RequestBytes(gssEncRequestCode))
			return conn
		},
		wantCode: "08P01", wantMsg: "unexpected GSSENCRequest",
	}, {
		name: "plaintext refused",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			dbtest.MustWrite(t, conn, startup)
			return conn
		},
		wantCode: "28000", wantMsg: "TLS is required for a.test",
	}, {
		name:      "plaintext allowed",
		plaintext: true,
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			dbtest.MustWrite(t, conn, startup)
			return conn
		},
		wantBackend: "a",
	}, {
		name:      "TLS still routes by SNI when plaintext is allowed",
		plaintext: true,
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "b.test", "b.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "bytes pipelined after SSLRequest",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			// One write: the startup packet is in the proxy's socket
			// before it answers the SSLRequest.
			dbtest.MustWrite(t, conn, append(pgtest.RequestBytes(sslRequestCode), startup...))
			return conn
		},
		wantCode: "08P01", wantMsg: "received unencrypted data after SSL request",
	}, {
		name: "second SSLRequest inside TLS",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test")
			dbtest.MustWrite(t, tc, pgtest.RequestBytes(sslRequestCode))
			return tc
		},
		wantCode: "08P01", wantMsg: "received more than one SSLRequest",
	}, {
		name: "unknown server name",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			// The handshake completes with the default's certificate…
			tc := pgtest.SSLRequest(t, conn, ca, "c.test", "a.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		// …and the client is told, never routed.
		wantCode: "08004", wantMsg: "no route for server name c.test",
	}, {
		name: "no server name gets the default",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "", "a.test")
			dbtest.MustWrite(t, tc, startup)
			return tc
		},
		wantBackend: "a", wantTLS: true,
	}, {
		name: "protocol 3.2",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "b.test", "b.test")
			dbtest.MustWrite(t, tc, pgtest.StartupBytes(3, 2, "user", "alice"))
			return tc
		},
		wantBackend: "b", wantTLS: true,
	}, {
		name: "protocol 2.0",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test")
			dbtest.MustWrite(t, tc, pgtest.StartupBytes(2, 0, "user", "alice"))
			return tc
		},
		wantCode: "0A000", wantMsg: "unsupported frontend protocol 2.0",
	}, {
		name: "oversized startup packet",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test")
			dbtest.MustWrite(t, tc, pgtest.StartupBytes(3, 0, "user", strings.Repeat("x", maxStartupPacket)))
			return tc
		},
		wantCode: "08P01", wantMsg: "invalid length of startup packet",
	}, {
		name: "malformed startup packet",
		run: func(t *testing.T, conn net.Conn, ca *dbtest.CA) net.Conn {
			tc := pgtest.SSLRequest(t, conn, ca, "a.test", "a.test")
			bad := pgtest.StartupBytes(3, 0, "user")
			dbtest.MustWrite(t, tc, bad)
			return tc
		},
		wantCode: "08P01", wantMsg: "invalid startup packet layout",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, a, b := twoBackends(t, func(cfg *dbproxy.Config) { cfg.Routes[0].AllowPlaintext = tt.plaintext })
			conn := tt.run(t, p.Dial(t), p.CA)
			fe := pgproto3.NewFrontend(conn, conn)
			res := pgtest.ReadStartup(t, fe)
			if tt.wantCode != "" {
				if res.Err == nil {
					t.Fatalf("got no ErrorResponse (read error %v), want SQLSTATE %s", res.ReadErr, tt.wantCode)
				}
				if res.Err.Code != tt.wantCode || !strings.Contains(res.Err.Message, tt.wantMsg) || res.Err.Severity != "FATAL" {
					t.Errorf("got %s %s %q, want FATAL %s containing %q", res.Err.Severity, res.Err.Code, res.Err.Message, tt.wantCode, tt.wantMsg)
				}
				// Then the proxy closes, and no backend was involved.
				if _, err := fe.Receive(); err == nil {
					t.Error("connection still open after the ErrorResponse")
				}
				if n := a.Accepted.Load() + b.Accepted.Load(); n != 0 {
					t.Errorf("backends got %d connections, want 0", n)
				}
				return
			}
			if res.Err != nil || res.ReadErr != nil {
				t.Fatalf("startup failed: %+v", res)
			}
			want := map[string]*pgtest.Backend{"a": a, "b": b}[tt.wantBackend]
			if res.PID != want.PID || !bytes.Equal(res.Key, want.Key) {
				t.Errorf("BackendKeyData: got %d %x, want %d %x", res.PID, res.Key, want.PID, want.Key)
			}
			if got, want := pgtest.Query(t, fe, "select 1"), tt.wantBackend+":false:select 1"; got != want {
				t.Errorf("query went to %q, want %q", got, want)
			}
			params := <-want.Startups
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
	conn := p.Dial(t)
	req := pgtest.RequestBytes(sslRequestCode)
	dbtest.MustWrite(t, conn, req[:3])
	time.Sleep(20 * time.Millisecond)
	dbtest.MustWrite(t, conn, req[3:])
	if got := pgtest.ReadByte(t, conn); got != 'S' {
		t.Fatalf("SSLRequest answer: got %q, want 'S'", got)
	}
}

func TestPostgresPlaintextHandshakeKeepsTCP(t *testing.T) {
	// With plain TCP on both sides the pump's io.Copy can splice: the
	// handshake must hand back the client's *net.TCPConn itself and the
	// backend connection just as Session.Dial made it (the pump unwraps
	// that to its *net.TCPConn).
	a := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}})
	r := a.Route("a.test")
	r.AllowPlaintext = true
	rec := &handshakeRecorder{protocol: new(protocol), got: make(chan handshakeResult, 1)}
	p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: rec, Routes: []dbproxy.Route{r}, Default: "a.test"})
	conn := p.Dial(t)
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	if res := pgtest.ReadStartup(t, pgproto3.NewFrontend(conn, conn)); res.Err != nil || res.ReadErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	got := <-rec.got
	if got.err != nil {
		t.Fatal(got.err)
	}
	if _, ok := got.c.(*net.TCPConn); !ok {
		t.Errorf("client side: got %T, want *net.TCPConn", got.c)
	}
	if reflect.TypeOf(got.b) != reflect.TypeOf(got.dialed) {
		t.Errorf("backend side: got %T, want %T from Session.Dial", got.b, got.dialed)
	}
}

// handshakeRecorder is the postgres protocol, reporting what each
// Handshake returns together with a fresh connection from Session.Dial to
// compare the backend side with.
type handshakeRecorder struct {
	*protocol
	got chan handshakeResult
}

type handshakeResult struct {
	c, b, dialed net.Conn
	err          error
}

func (h *handshakeRecorder) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	c, b, err := h.protocol.Handshake(ctx, client, s)
	res := handshakeResult{c: c, b: b, err: err}
	if err == nil {
		res.dialed, res.err = s.Dial(ctx, s.Routed())
		if res.err == nil {
			res.dialed.Close()
		}
	}
	h.got <- res
	return c, b, err
}

func TestPostgresAsyncMessageAfterReady(t *testing.T) {
	// A message the backend sends right behind ReadyForQuery, read along
	// with it, reaches the client before anything the pump copies.
	ca := dbtest.NewCA(t)
	notice, _ := (&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello from a"}).Encode(nil)
	a := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}, AsyncAfterReady: notice})
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{a.Route("a.test")}})
	conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	fe := pgproto3.NewFrontend(conn, conn)
	if res := pgtest.ReadStartup(t, fe); res.Err != nil || res.ReadErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := msg.(*pgproto3.NoticeResponse); !ok || n.Message != "hello from a" {
		t.Fatalf("got %#v, want the NoticeResponse", msg)
	}
	if got := pgtest.Query(t, fe, "x"); got != "a:false:x" {
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
			ca := dbtest.NewCA(t)
			a := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}, Password: "sesame"})
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{a.Route("a.test")}})
			conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
			dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
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
			res := pgtest.ReadStartup(t, fe)
			if tt.pipelined && res.Err == nil && res.ReadErr == nil {
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
			case tt.wantCode == "" && (res.Err != nil || res.ReadErr != nil):
				t.Fatalf("got %+v, want a session", res)
			case tt.wantCode != "" && (res.Err == nil || res.Err.Code != tt.wantCode):
				t.Fatalf("got %+v, want the backend's SQLSTATE %s", res, tt.wantCode)
			}
		})
	}
}

func TestPostgresBackendFailures(t *testing.T) {
	ca := dbtest.NewCA(t)
	otherCA := dbtest.NewCA(t)
	goodCert, _, _ := ca.Issue(t, "127.0.0.1")
	strangerCert, _, _ := otherCA.Issue(t, "127.0.0.1")
	verified := pgtest.StartBackend(t, &pgtest.Backend{Name: "v", PID: 1, Key: []byte{1, 2, 3, 4}, Cert: &goodCert})
	stranger := pgtest.StartBackend(t, &pgtest.Backend{Name: "s", PID: 2, Key: []byte{1, 2, 3, 4}, Cert: &strangerCert})
	plain := pgtest.StartBackend(t, &pgtest.Backend{Name: "p", PID: 3, Key: []byte{1, 2, 3, 4}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()

	tests := []struct {
		name     string
		route    dbproxy.Route
		wantTag  string // the session works and queries answer this
		wantCode string
	}{
		{"verify", dbproxy.Route{Backend: verified.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, "v:true:q", ""},
		{"insecure", dbproxy.Route{Backend: stranger.Addr, TLS: dbproxy.TLSInsecure}, "s:true:q", ""},
		{"verify fails", dbproxy.Route{Backend: stranger.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, "", "08001"},
		{"backend without TLS", dbproxy.Route{Backend: plain.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, "", "08001"},
		{"backend down", dbproxy.Route{Backend: down}, "", "08001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.route.Host = "db.test"
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{tt.route}})
			conn := pgtest.SSLRequest(t, p.Dial(t), ca, "db.test", "db.test")
			dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
			fe := pgproto3.NewFrontend(conn, conn)
			res := pgtest.ReadStartup(t, fe)
			if tt.wantCode != "" {
				if res.Err == nil || res.Err.Code != tt.wantCode || !strings.Contains(res.Err.Message, "db.test") {
					t.Fatalf("got %+v, want SQLSTATE %s naming db.test", res, tt.wantCode)
				}
				if strings.Contains(res.Err.Message, tt.route.Backend) {
					t.Errorf("message %q shows the backend address to the client", res.Err.Message)
				}
				if _, err := fe.Receive(); err == nil {
					t.Error("connection still open after the ErrorResponse")
				}
				return
			}
			if res.Err != nil || res.ReadErr != nil {
				t.Fatalf("startup failed: %+v", res)
			}
			if got := pgtest.Query(t, fe, "q"); got != tt.wantTag {
				t.Errorf("query: got %q, want %q", got, tt.wantTag)
			}
		})
	}
}

func TestPostgresCancel(t *testing.T) {
	p, a, b := twoBackends(t, nil)
	ca := p.CA
	// One session on each backend.
	sessions := map[string]*pgproto3.Frontend{}
	var aConn net.Conn
	for _, host := range []string{"a.test", "b.test"} {
		conn := pgtest.SSLRequest(t, p.Dial(t), ca, host, host)
		if host == "a.test" {
			aConn = conn
		}
		dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 2, "user", "u"))
		fe := pgproto3.NewFrontend(conn, conn)
		if res := pgtest.ReadStartup(t, fe); res.Err != nil || res.ReadErr != nil {
			t.Fatalf("startup %s: %+v", host, res)
		}
		sessions[host] = fe
	}
	dbtest.WaitFor(t, "two cancel keys", func() bool { return p.proto.cancels.len() == 2 })

	tests := []struct {
		name   string
		pid    uint32
		key    []byte
		viaTLS string // "" for a plaintext cancel, else the SNI
		want   *pgtest.Backend
	}{
		{"plaintext to a", a.PID, a.Key, "", a},
		{"plaintext to b", b.PID, b.Key, "", b},
		{"over TLS to b", b.PID, b.Key, "b.test", b},
		{"over TLS with the other name", b.PID, b.Key, "a.test", b},
		{"unknown key", b.PID, a.Key, "", nil},
		{"right key, wrong pid", a.PID + 1, a.Key, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeA, beforeB := a.Accepted.Load(), b.Accepted.Load()
			var conn net.Conn = p.Dial(t)
			if tt.viaTLS != "" {
				conn = pgtest.SSLRequest(t, conn, ca, tt.viaTLS, tt.viaTLS)
			}
			dbtest.MustWrite(t, conn, pgtest.CancelBytes(tt.pid, tt.key))
			// The proxy closes once the backend has the request, as
			// PostgreSQL does, and says nothing.
			if n, err := io.Copy(io.Discard, conn); n != 0 || err != nil {
				t.Fatalf("after cancel: read %d bytes, %v; want EOF", n, err)
			}
			gotA, gotB := a.Accepted.Load()-beforeA, b.Accepted.Load()-beforeB
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
					t.Errorf("%s got %d connections and %s %d; want 1 and 0", tt.want.Name, gotWant, other.Name, gotOther)
				}
				select {
				case k := <-tt.want.Cancels:
					if k.PID != tt.pid || k.Key != string(tt.key) {
						t.Errorf("backend got cancel %d %x, want %d %x", k.PID, k.Key, tt.pid, tt.key)
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
	dbtest.WaitFor(t, "a's cancel key to go", func() bool { return p.proto.cancels.len() == 1 })
	if _, ok := p.proto.cancels.lookup(a.PID, a.Key); ok {
		t.Error("a's key is still known after its session ended")
	}
}

func TestPostgresTooManyConnections(t *testing.T) {
	p, _, _ := twoBackends(t, func(cfg *dbproxy.Config) { cfg.MaxConns = 1 })
	first := pgtest.SSLRequest(t, p.Dial(t), p.CA, "a.test", "a.test")
	defer first.Close()
	second := p.Dial(t)
	dbtest.MustWrite(t, second, pgtest.RequestBytes(sslRequestCode))
	fe := pgproto3.NewFrontend(second, second)
	res := pgtest.ReadStartup(t, fe)
	if res.Err == nil || res.Err.Code != "53300" {
		t.Fatalf("got %+v, want SQLSTATE 53300", res)
	}
	if got := p.Srv.Stats().Refused; got != 1 {
		t.Errorf("Refused: got %d, want 1", got)
	}
	// The first session is unaffected.
	dbtest.MustWrite(t, first, pgtest.StartupBytes(3, 0, "user", "u"))
	fe1 := pgproto3.NewFrontend(first, first)
	if res := pgtest.ReadStartup(t, fe1); res.Err != nil || res.ReadErr != nil {
		t.Fatalf("first session: %+v", res)
	}
	if got := pgtest.Query(t, fe1, "q"); got != "a:false:q" {
		t.Errorf("query: got %q, want a:false:q", got)
	}
}

func TestPostgresHandshakeTimeout(t *testing.T) {
	p, _, _ := twoBackends(t, func(cfg *dbproxy.Config) { cfg.HandshakeTimeout = 200 * time.Millisecond })
	conn := p.Dial(t)
	dbtest.MustWrite(t, conn, []byte{0, 0}) // half a length word, then nothing
	// The proxy gives up and closes; io.Copy returns at EOF.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("got %v, want the proxy to close the connection", err)
	}
	dbtest.WaitFor(t, "the session-end log line", func() bool { return len(p.Logs.Records(t, "session end")) == 1 })
	rec := p.Logs.Records(t, "session end")[0]
	if msg, _ := rec["error"].(string); !strings.Contains(msg, "timeout") {
		t.Errorf("logged error %q, want a timeout", msg)
	}
}

func TestPostgresRefuseUnknownProtocol(t *testing.T) {
	var buf bytes.Buffer
	(&protocol{}).Refuse(&writerConn{w: &buf}, errors.New("going away"))
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
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "127.0.0.1")
	fb := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 9, Key: []byte{9, 9, 9, 9}, Cert: &cert})
	r := fb.Route("a.test")
	r.TLS, r.RootCAs = dbproxy.TLSVerify, ca.Pool
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{r}})
	conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	fe := pgproto3.NewFrontend(conn, conn)
	if res := pgtest.ReadStartup(t, fe); res.Err != nil || res.ReadErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	dbtest.WaitFor(t, "the cancel key", func() bool { return p.proto.cancels.len() == 1 })
	c := p.Dial(t)
	dbtest.MustWrite(t, c, pgtest.CancelBytes(fb.PID, fb.Key))
	io.Copy(io.Discard, c)
	select {
	case k := <-fb.Cancels:
		if k.PID != fb.PID || k.Key != string(fb.Key) {
			t.Errorf("backend got cancel %d %x", k.PID, k.Key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend got no cancel request")
	}
	if got := pgtest.Query(t, fe, "q"); got != "a:true:q" {
		t.Errorf("query: got %q, want a:true:q", got)
	}
}

func TestRelayStartupBackendMessages(t *testing.T) {
	encode := func(msgs ...pgproto3.BackendMessage) []byte {
		var b []byte
		for _, m := range msgs {
			b, _ = m.Encode(b)
		}
		return b
	}
	longError := encode(&pgproto3.AuthenticationOk{},
		&pgproto3.ErrorResponse{Severity: "FATAL", Code: "XX000", Message: strings.Repeat("x", maxErrorParse)})
	ready := encode(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	tests := []struct {
		name     string
		backend  []byte
		wantCode string // SQLSTATE of the proxy's own ErrorResponse, "" for none
		wantErr  string
	}{
		{"long ErrorResponse", longError, "", "message too long to log"},
		{"BackendKeyData too short", []byte{'K', 0, 0, 0, 7, 0, 0, 1}, sqlstateProtocolViolation, "invalid BackendKeyData length 3"},
		{"BackendKeyData key too long", append([]byte{'K', 0, 0, 1, 9}, make([]byte, 261)...), sqlstateProtocolViolation, "invalid BackendKeyData length 261"},
		{"BackendKeyData too long to read", append([]byte{'K', 0, 0, 1, 10}, make([]byte, 262)...), sqlstateProtocolViolation, "invalid BackendKeyData length 262"},
		{"BackendKeyData cut short", []byte{'K', 0, 0, 0, 12, 0, 0, 0, 1}, sqlstateConnectionFailure, "unexpected EOF"},
		{"ErrorResponse cut short", []byte{'E', 0, 0, 0, 20, 'S'}, sqlstateConnectionFailure, "unexpected EOF"},
		{"long ErrorResponse cut short", longError[:len(longError)-1], sqlstateConnectionFailure, "EOF"},
		{"ReadyForQuery cut short", ready[:len(ready)-1], sqlstateConnectionFailure, "EOF"},
		{"ParameterStatus cut short", []byte{'S', 0, 0, 0, 20, 'a'}, sqlstateConnectionFailure, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var toClient bytes.Buffer
			client := &idleClient{w: &toClient, stopped: make(chan struct{})}
			b := &memConn{Reader: bytes.NewReader(tt.backend), Writer: io.Discard}
			key, err := relayStartup(client, b, "db.test")
			if key != nil || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, %v; want an error about %q", key, err, tt.wantErr)
			}
			out := toClient.Bytes()
			if tt.wantCode == "" {
				if !bytes.Equal(out, tt.backend) {
					t.Errorf("client got %d bytes, want the backend's %d verbatim", len(out), len(tt.backend))
				}
				return
			}
			we, ok := errors.AsType[*wireError](err)
			if !ok || we.code != tt.wantCode {
				t.Fatalf("got %v, want a %s refusal", err, tt.wantCode)
			}
			if !bytes.HasSuffix(out, appendErrorResponse(nil, we.code, we.msg)) {
				t.Errorf("client got %q, want the proxy's ErrorResponse last", out)
			}
		})
	}
}

// idleClient is a client that sends nothing during the startup: its Read
// blocks until the relay stops it with a read deadline.
type idleClient struct {
	w       io.Writer
	once    sync.Once
	stopped chan struct{}
}

func (c *idleClient) Read([]byte) (int, error) {
	<-c.stopped
	return 0, os.ErrDeadlineExceeded
}

func (c *idleClient) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *idleClient) SetReadDeadline(time.Time) error {
	c.once.Do(func() { close(c.stopped) })
	return nil
}

func TestPostgresClientEndsStartup(t *testing.T) {
	// A client that half-closes while the backend waits for its password
	// passes the close on, over TLS to the backend: the backend ends the
	// startup at once, not at the handshake deadline.
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "127.0.0.1")
	fb := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}, Password: "sesame", Cert: &cert})
	r := fb.Route("a.test")
	r.TLS, r.RootCAs = dbproxy.TLSVerify, ca.Pool
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{r}, HandshakeTimeout: time.Minute})
	conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	fe := pgproto3.NewFrontend(conn, conn)
	if msg, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("got %T, want AuthenticationCleartextPassword", msg)
	}
	if err := conn.(*tls.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*tls.Conn).NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	res := pgtest.ReadStartup(t, fe)
	if res.Err == nil || res.Err.Code != sqlstateConnectionFailure {
		t.Fatalf("got %+v, want SQLSTATE %s", res, sqlstateConnectionFailure)
	}
	if e := p.SessionError(t); !strings.Contains(e, "client ended the startup") {
		t.Errorf("session end error %q, want the client's end", e)
	}
}

func TestPostgresBackendClosesBeforeSSLAnswer(t *testing.T) {
	ca := dbtest.NewCA(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ServeFake(t, l, 10*time.Second, nil, func(c net.Conn) {})
	r := dbproxy.Route{Host: "a.test", Backend: l.Addr().String(), TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{r}})
	conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	res := pgtest.ReadStartup(t, pgproto3.NewFrontend(conn, conn))
	if res.Err == nil || res.Err.Code != sqlstateConnectFailed {
		t.Fatalf("got %+v, want SQLSTATE %s", res, sqlstateConnectFailed)
	}
	if e := p.SessionError(t); !strings.Contains(e, "reading SSLRequest answer from backend") {
		t.Errorf("session end error %q, want the backend's missing answer", e)
	}
}

func TestPostgresCancelBackendDown(t *testing.T) {
	// The backend that issued the key cannot be reached for the cancel:
	// the cancel line says so, and the client learns nothing.
	fb := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 5, Key: []byte{5, 5, 5, 5}})
	var dials atomic.Int32
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) > 1 {
			return nil, errors.New("backend down")
		}
		return new(net.Dialer).DialContext(ctx, network, addr)
	}
	p := startProxy(t, dbtest.NewCA(t), dbproxy.Config{Routes: []dbproxy.Route{fb.Route("a.test")}, Dialer: dial})
	conn := pgtest.SSLRequest(t, p.Dial(t), p.CA, "a.test", "a.test")
	dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	if res := pgtest.ReadStartup(t, pgproto3.NewFrontend(conn, conn)); res.Err != nil || res.ReadErr != nil {
		t.Fatalf("startup: %+v", res)
	}
	dbtest.WaitFor(t, "the cancel key", func() bool { return p.proto.cancels.len() == 1 })
	c := p.Dial(t)
	dbtest.MustWrite(t, c, pgtest.CancelBytes(fb.PID, fb.Key))
	if got, err := dbtest.ReadAll(t, c); got != "" || err != nil {
		t.Fatalf("after cancel: got %q, %v; want EOF", got, err)
	}
	var rec map[string]any
	dbtest.WaitFor(t, "the cancel log line", func() bool {
		recs := p.Logs.Records(t, "cancel request")
		if len(recs) == 1 {
			rec = recs[0]
		}
		return rec != nil
	})
	if e, _ := rec["error"].(string); !strings.Contains(e, "backend down") {
		t.Errorf("cancel logged error %q, want the dial's", e)
	}
}
