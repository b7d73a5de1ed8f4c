package mssql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mssqldb "github.com/microsoft/go-mssqldb"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/tdstest"
)

// These tests drive leproxy with go-mssqldb, the Go SQL Server driver,
// against tdstest's fake server. The driver connects to host names of
// the routes (db.test…), which its dialer sends to the proxy, and
// verifies leproxy's certificate against the test CA for that name.

var testUsers = map[string]string{"app": "s3cret"}

// proxyDialer is a go-mssqldb dialer that connects every address to the
// proxy, records the addresses asked for and, when capture is set, every
// byte the client writes. It is a HostDialer, so the driver asks for host
// names without resolving them.
type proxyDialer struct {
	proxy string

	mu      sync.Mutex
	dialed  []string
	capture bool
	written bytes.Buffer
}

func (d *proxyDialer) HostName() string { return "leproxy-test" }

func (d *proxyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	d.mu.Unlock()
	c, err := new(net.Dialer).DialContext(ctx, "tcp", d.proxy)
	if err != nil {
		return nil, err
	}
	if d.capture {
		return &capturingConn{Conn: c, d: d}, nil
	}
	return c, nil
}

func (d *proxyDialer) Dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...)
}

func (d *proxyDialer) Written() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.written.Bytes())
}

type capturingConn struct {
	net.Conn
	d *proxyDialer
}

func (c *capturingConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	c.d.written.Write(p)
	c.d.mu.Unlock()
	return c.Conn.Write(p)
}

// env is a proxy under test with the CA file its clients trust.
type env struct {
	p      *dbtest.Proxy
	caFile string
}

func startEnv(t *testing.T, def string, routes ...dbproxy.Route) *env {
	t.Helper()
	ca := dbtest.NewCA(t)
	proto, _ := dbproxy.Lookup("mssql")
	p := dbtest.StartProxy(t, ca, dbproxy.Config{Protocol: proto, Routes: routes, Default: def})
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{p: p, caFile: f}
}

// open returns a database handle for go-mssqldb connecting to host (a
// route name) through the proxy with the connection string's query
// params.
func (e *env) open(t *testing.T, host, user, password, params string) (*sql.DB, *proxyDialer) {
	t.Helper()
	dsn := fmt.Sprintf("sqlserver://%s:%s@%s:1433?certificate=%s&dial+timeout=10&connection+timeout=20&%s", user, password, host, e.caFile, params)
	conn, err := mssqldb.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	d := &proxyDialer{proxy: e.p.Addr}
	conn.Dialer = d
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db, d
}

// query runs the fake's query and returns its name column.
func query(t *testing.T, db *sql.DB, q string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var n int
	var name string
	if err := db.QueryRowContext(ctx, q).Scan(&n, &name); err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	if n != 1 {
		t.Fatalf("query %q: n = %d, want 1", q, n)
	}
	return name
}

func TestGoMssqldbEncryptModes(t *testing.T) {
	for _, tc := range []struct {
		encrypt string
		tds8    bool
	}{
		{"true", false},
		{"false", false}, // asks for login-only encryption: gets full
		{"strict", true},
	} {
		t.Run("encrypt="+tc.encrypt, func(t *testing.T) {
			be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
			e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
			db, d := e.open(t, "db.test", "app", "s3cret", "encrypt="+tc.encrypt)
			d.capture = tc.encrypt == "false"
			if got := query(t, db, "SELECT 1 AS n, @@SERVERNAME AS name"); got != "db" {
				t.Fatalf("name = %q, want db", got)
			}
			logins := be.Logins()
			if len(logins) != 1 {
				t.Fatalf("backend saw %d logins, want 1", len(logins))
			}
			lg := logins[0]
			if lg.User != "app" || lg.ServerName != "db.test" || !lg.OK || lg.TLS {
				t.Errorf("backend login %+v: want app, server name db.test, password accepted, over the plain link", lg)
			}
			// A TDS 8.0 client's LOGIN7 reaches a TDS 7.x backend as 7.4.
			if lg.TDSVersion != 0x74000004 {
				t.Errorf("backend login TDS version %#x, want 0x74000004", lg.TDSVersion)
			}
			if tc.encrypt == "false" {
				checkFullyEncrypted(t, d.Written())
			}
		})
	}
}

// checkFullyEncrypted checks what a client wrote: a PRELOGIN asking for
// encryption OFF (login-only), the TLS handshake inside PRELOGIN packets,
// then nothing but TLS records, application data among them: no TDS
// packet in plaintext after the login.
func checkFullyEncrypted(t *testing.T, b []byte) {
	t.Helper()
	first, err := tdstest.ReadPacket(bytes.NewReader(b))
	if err != nil || first.Type != tdstest.PacketPrelogin {
		t.Fatalf("client's first packet: %+v, %v; want PRELOGIN", first, err)
	}
	opts, err := tdstest.PreloginOptions(first.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if e := opts[0x01]; len(e) != 1 || e[0] != tdstest.EncryptOff {
		t.Fatalf("client asked for ENCRYPTION %x, want OFF (login-only)", e)
	}
	rest := b[8+len(first.Payload):]
	handshake := 0
	for len(rest) > 0 && rest[0] == tdstest.PacketPrelogin {
		n := int(binary.BigEndian.Uint16(rest[2:]))
		rest = rest[n:]
		handshake++
	}
	if handshake == 0 {
		t.Fatal("no TLS handshake inside PRELOGIN packets")
	}
	appData := 0
	for len(rest) > 0 {
		if len(rest) < 5 || rest[0] < 0x14 || rest[0] > 0x17 || rest[1] != 3 {
			t.Fatalf("after the handshake the client wrote %x…, which is no TLS record: plaintext TDS", rest[:min(len(rest), 16)])
		}
		if rest[0] == 0x17 {
			appData++
		}
		n := 5 + int(binary.BigEndian.Uint16(rest[3:]))
		if n > len(rest) {
			t.Fatalf("TLS record of %d bytes cut at %d", n, len(rest))
		}
		rest = rest[n:]
	}
	if appData < 2 {
		t.Fatalf("%d application data records after the handshake, want the login and the query", appData)
	}
	if bytes.Contains(b, tdstest.UCS2("@@SERVERNAME")) {
		t.Fatal("the query went over the wire in plaintext")
	}
}

func TestGoMssqldbWrongPassword(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
	e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	db, _ := e.open(t, "db.test", "app", "wrong", "encrypt=true")
	err := db.Ping()
	if err == nil || !strings.Contains(err.Error(), "Login failed for user 'app'") {
		t.Fatalf("Ping = %v, want the backend's login failure", err)
	}
	var me mssqldb.Error
	if errors.As(err, &me) && me.Number != 18456 {
		t.Errorf("error number %d, want the backend's 18456", me.Number)
	}
	if e := e.p.SessionError(t); !strings.Contains(e, "Login failed") {
		t.Errorf("session error %q, want the backend's login failure", e)
	}
	rec := e.p.SessionEnds(t)[0]
	if rec["closed_by"] != dbproxy.ByBackend || rec["reason"] != dbproxy.ReasonRefused {
		t.Errorf("session end closed_by=%v reason=%v, want backend refused", rec["closed_by"], rec["reason"])
	}
}

func TestGoMssqldbCancelAndReset(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
	e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	db, _ := e.open(t, "db.test", "app", "s3cret", "encrypt=true")
	db.SetMaxOpenConns(1)
	query(t, db, "SELECT 1")
	// database/sql resets a pooled connection before reusing it.
	query(t, db, "SELECT 1")
	if be.Resets() == 0 {
		t.Error("no message with RESETCONNECTION reached the backend")
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Cancelled, not timed out: go-mssqldb drops a connection whose
	// context timed out (context.DeadlineExceeded is a net.Error to it).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(300*time.Millisecond, cancel)
	if _, err := conn.ExecContext(ctx, "WAITFOR DELAY '00:01:00'"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WAITFOR = %v, want the cancellation", err)
	}
	// At least one: under load the driver may send a second.
	if got := be.Attentions(); got < 1 {
		t.Fatalf("backend saw %d ATTENTIONs, want the cancel's", got)
	}
	// The session goes on after the cancel's DONE_ATTN.
	var n int
	var name string
	if err := conn.QueryRowContext(context.Background(), "SELECT 1 AS n, @@SERVERNAME AS name").Scan(&n, &name); err != nil || name != "db" {
		t.Fatalf("after the cancel: %q, %v", name, err)
	}
	if n := len(be.Logins()); n != 1 {
		t.Errorf("%d logins, want 1 (the session survived the cancel)", n)
	}
}

func TestGoMssqldbPacketSize(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
	e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	db, _ := e.open(t, "db.test", "app", "s3cret", "encrypt=true&packet+size=512")
	if got := query(t, db, "SELECT 1 AS n, 'big' AS name"); len(got) != 3000 {
		t.Fatalf("big value of %d characters, want 3000", len(got))
	}
	if lg := be.Logins()[0]; lg.PacketSize != 512 {
		t.Errorf("backend login packet size %d, want 512", lg.PacketSize)
	}
}

func TestGoMssqldbRefusals(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
	for _, tc := range []struct {
		name, host, params string
		routes             []dbproxy.Route
		def                string
		want               string
		number             int32
	}{
		{
			name: "UnknownServerName", host: "other.test", params: "encrypt=true&TrustServerCertificate=true",
			routes: []dbproxy.Route{{Host: "db.test", Backend: be.Addr}},
			want:   "no route for server name other.test (leproxy)", number: errNoRoute,
		},
		{
			name: "BackendDown", host: "db.test", params: "encrypt=true",
			routes: []dbproxy.Route{{Host: "db.test", Backend: dbtest.ClosedAddr(t)}},
			want:   "could not connect to the backend of db.test (leproxy)", number: errUnreachable,
		},
		{
			name: "PlaintextRefused", host: "db.test", params: "encrypt=disable",
			routes: []dbproxy.Route{{Host: "db.test", Backend: be.Addr}}, def: "db.test",
			want: "TLS is required for db.test", number: errRefused,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, tc.def, tc.routes...)
			db, _ := e.open(t, tc.host, "app", "s3cret", tc.params)
			err := db.Ping()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ping = %v, want an error with %q", err, tc.want)
			}
			var me mssqldb.Error
			if !errors.As(err, &me) || me.Number != tc.number || me.Class != errClassFatal || me.ServerName != "leproxy" {
				t.Errorf("error %#v, want a TDS error %d, class %d, from leproxy", me, tc.number, errClassFatal)
			}
		})
	}
}

func TestGoMssqldbPlaintextAllowed(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers})
	e := startEnv(t, "db.test", dbproxy.Route{Host: "db.test", Backend: be.Addr, AllowPlaintext: true})
	db, _ := e.open(t, "db.test", "app", "s3cret", "encrypt=disable")
	if got := query(t, db, "SELECT 1 AS n, @@SERVERNAME AS name"); got != "db" {
		t.Fatalf("name = %q, want db", got)
	}
}

// TLS backends: TDS 7.x (TLS inside PRELOGIN) for tls: verify, TDS 8.0
// for tls: strict, both verifying the backend's certificate.
func TestGoMssqldbTLSBackend(t *testing.T) {
	for _, tc := range []struct {
		mode dbproxy.TLSMode
		tds8 bool
	}{{dbproxy.TLSVerify, false}, {dbproxy.TLSStrict, true}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			ca := dbtest.NewCA(t)
			cert, _, _ := ca.Issue(t, "127.0.0.1")
			be := tdstest.Start(t, &tdstest.Server{Name: "db", Users: testUsers, Cert: &cert})
			e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr, TLS: tc.mode, RootCAs: ca.Pool})
			for _, enc := range []string{"true", "strict"} {
				db, _ := e.open(t, "db.test", "app", "s3cret", "encrypt="+enc)
				if got := query(t, db, "SELECT 1 AS n, @@SERVERNAME AS name"); got != "db" {
					t.Fatalf("encrypt=%s: name = %q, want db", enc, got)
				}
			}
			for _, lg := range be.Logins() {
				want := uint32(0x74000004)
				if tc.tds8 {
					want = 0x08000000
				}
				if !lg.TLS || lg.TDS8 != tc.tds8 || !lg.OK || lg.TDSVersion != want {
					t.Errorf("backend login %+v: want TLS, TDS 8.0 %v, TDS version %#x", lg, tc.tds8, want)
				}
			}
		})
	}
}

func TestGoMssqldbBackendRequiresTLS(t *testing.T) {
	req := byte(tdstest.EncryptReq)
	be := tdstest.Start(t, &tdstest.Server{Name: "db", Encryption: &req})
	e := startEnv(t, "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	db, _ := e.open(t, "db.test", "app", "s3cret", "encrypt=true")
	if err := db.Ping(); err == nil || !strings.Contains(err.Error(), "could not connect to the backend of db.test") {
		t.Fatalf("Ping = %v, want the backend refusal", err)
	}
	if e := e.p.SessionError(t); !strings.Contains(e, "requires encryption") {
		t.Errorf("session error %q, want it to say the backend requires encryption", e)
	}
}

// An ENVCHANGE routing token naming a route's backend is rewritten to that
// route's name and the listener's port: the driver comes back through
// leproxy. One naming anything else is refused.
func TestGoMssqldbRedirect(t *testing.T) {
	b := tdstest.Start(t, &tdstest.Server{Name: "b", Users: testUsers})
	a := tdstest.Start(t, &tdstest.Server{Name: "a", Users: testUsers, Route: b.Addr})
	elsewhere := tdstest.Start(t, &tdstest.Server{Name: "c", Users: testUsers, Route: dbtest.ClosedAddr(t)})
	e := startEnv(t, "",
		dbproxy.Route{Host: "a.test", Backend: a.Addr},
		dbproxy.Route{Host: "b.test", Backend: b.Addr},
		dbproxy.Route{Host: "c.test", Backend: elsewhere.Addr})
	_, port, _ := net.SplitHostPort(e.p.Addr)

	db, d := e.open(t, "a.test", "app", "s3cret", "encrypt=true")
	if got := query(t, db, "SELECT 1 AS n, @@SERVERNAME AS name"); got != "b" {
		t.Fatalf("name = %q, want b (the redirect's target)", got)
	}
	if got := d.Dialed(); len(got) != 2 || got[1] != net.JoinHostPort("b.test", port) {
		t.Errorf("driver dialled %q, want a.test then b.test:%s", got, port)
	}

	db, _ = e.open(t, "c.test", "app", "s3cret", "encrypt=true")
	err := db.Ping()
	if err == nil || !strings.Contains(err.Error(), "redirects the client to a server that is not a route") {
		t.Fatalf("Ping = %v, want the redirect refused", err)
	}
}
