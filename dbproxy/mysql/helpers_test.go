package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// Test helpers for the MySQL protocol: a proxy, a fake MySQL 8 server, a
// raw client that controls every byte, and go-sql-driver/mysql
// connections.

// startProxy starts a mysql Server for cfg; see dbtest.StartProxy.
func startProxy(t testing.TB, ca *dbtest.CA, cfg dbproxy.Config) *dbtest.Proxy {
	t.Helper()
	proto, ok := dbproxy.Lookup("mysql")
	if !ok {
		t.Fatal("mysql is not registered")
	}
	cfg.Protocol = proto
	return dbtest.StartProxy(t, ca, cfg)
}

// openDB opens a go-sql-driver/mysql pool to addr as user, with TLS
// config tc (nil for plaintext) and mod applied to the driver's config.
// It is closed when the test ends.
func openDB(t testing.TB, addr string, tc *tls.Config, user, password string, mod func(*gomysql.Config)) *sql.DB {
	t.Helper()
	cfg := gomysql.NewConfig()
	cfg.Net, cfg.Addr = "tcp", addr
	cfg.User, cfg.Passwd = user, password
	cfg.TLS = tc
	cfg.Timeout = 20 * time.Second
	cfg.ReadTimeout, cfg.WriteTimeout = time.Minute, time.Minute
	cfg.Logger = gomysql.Logger(testLogger{t})
	if mod != nil {
		mod(cfg)
	}
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("mysql.NewConnector: %v", err)
	}
	db := sql.OpenDB(nulNonceRetry{Connector: conn, t: t})
	t.Cleanup(func() { db.Close() })
	return db
}

// nulNonceRetry retries a login that go-sql-driver/mysql fails with
// ErrMalformPkt for a reason of its own: it strips a trailing NUL from the
// data of every AuthSwitchRequest, and MariaDB's client_ed25519 nonce is
// 32 random bytes, so one login in 256 finds 31 and gives up, without
// leproxy as well. A new connection brings a new nonce; a malformed
// packet that comes back three times in a row is reported.
type nulNonceRetry struct {
	driver.Connector
	t testing.TB
}

func (c nulNonceRetry) Connect(ctx context.Context) (driver.Conn, error) {
	for attempt := 1; ; attempt++ {
		conn, err := c.Connector.Connect(ctx)
		if !errors.Is(err, gomysql.ErrMalformPkt) || attempt == 3 {
			return conn, err
		}
		c.t.Logf("login attempt %d: %v (an ed25519 nonce ending in NUL?); retrying", attempt, err)
	}
}

// testLogger sends the driver's log to the test's.
type testLogger struct{ t testing.TB }

func (l testLogger) Print(v ...any) { l.t.Log(append([]any{"mysql driver:"}, v...)...) }

// queryString runs a query that returns one string.
func queryString(t testing.TB, db *sql.DB, q string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s string
	if err := db.QueryRowContext(ctx, q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// serverError returns err as a server error, or fails the test.
func serverError(t testing.TB, err error) *gomysql.MySQLError {
	t.Helper()
	me, ok := err.(*gomysql.MySQLError)
	if !ok {
		t.Fatalf("got error %v (%T), want a MySQL server error", err, err)
	}
	return me
}

// Authentication computations, as a client makes them.

// nativeScramble is mysql_native_password's answer:
// SHA1(password) XOR SHA1(nonce, SHA1(SHA1(password))).
func nativeScramble(password string, nonce []byte) []byte {
	if password == "" {
		return nil
	}
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h := sha1.New()
	h.Write(nonce[:scrambleLen])
	h.Write(h2[:])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out
}

// cachingSHA2Scramble is caching_sha2_password's fast answer:
// SHA256(password) XOR SHA256(SHA256(SHA256(password)), nonce).
func cachingSHA2Scramble(password string, nonce []byte) []byte {
	if password == "" {
		return nil
	}
	h1 := sha256.Sum256([]byte(password))
	h2 := sha256.Sum256(h1[:])
	h := sha256.New()
	h.Write(h2[:])
	h.Write(nonce[:scrambleLen])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out
}

// fakeServer is a MySQL 8 server in miniature: it greets, takes TLS when
// it has a certificate, authenticates with mysql_native_password,
// caching_sha2_password (fast path from its cache, full authentication in
// cleartext over TLS or with its RSA key), sha256_password and
// mysql_clear_password, sending an AuthSwitchRequest when the client's
// plugin is not the user's, as MySQL does. Every packet's sequence id is
// checked. It answers COM_PING and COM_RESET_CONNECTION with OK and every
// COM_QUERY with one row, "<name>:<user>:<tls>", or with echo set with
// one packet, "<name>:<query>". What it saw goes to its channels.
type fakeServer struct {
	name    string
	version string // "8.0.36" when empty
	caps    uint32 // mysql8Caps when 0; CLIENT_SSL is added with a cert
	plugin  string // greeting plugin, caching_sha2_password when empty
	users   map[string]fakeUser
	cert    *tls.Certificate
	// switchNonce, when set, is the nonce of every AuthSwitchRequest
	// (recorded exchanges use one).
	switchNonce []byte
	// greetingERR, when set, is sent in place of the greeting.
	greetingERR []byte
	// echo answers every COM_QUERY with a single packet holding the
	// server's name, a colon and the query's text: the exchange of
	// Conformance, since the command phase is relayed packet by packet.
	echo bool

	addr     string
	key      *rsa.PrivateKey
	accepted atomic.Int32
	logins   chan fakeLogin // one per handshake response
	replies  chan []byte    // every client packet of the authentication phase, as received
	mu       sync.Mutex
	cached   map[string]bool // caching_sha2_password's cache
}

// fakeUser is an account of a fakeServer.
type fakeUser struct {
	plugin   string
	password string
	cached   bool // in caching_sha2_password's cache from the start
}

// fakeLogin is what a fakeServer saw of one login.
type fakeLogin struct {
	resp           *handshakeResponse
	tls            bool
	sslRequestCaps uint32 // caps of the SSLRequest, 0 without one
}

// mysql8Caps are the capabilities a MySQL 8.0 server announces
// (without CLIENT_SSL, which it adds when it has a certificate).
const mysql8Caps = 0xdfffffff &^ capSSL

func startFakeServer(t testing.TB, fm *fakeServer) *fakeServer {
	t.Helper()
	if fm.version == "" {
		fm.version = "8.0.36"
	}
	if fm.caps == 0 {
		fm.caps = mysql8Caps
	}
	if fm.cert != nil {
		fm.caps |= capSSL
	}
	if fm.plugin == "" {
		fm.plugin = pluginCachingSHA2
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fm.key = key
	fm.logins = make(chan fakeLogin, 64)
	fm.replies = make(chan []byte, 256)
	fm.cached = map[string]bool{}
	for name, u := range fm.users {
		if u.cached {
			fm.cached[name] = true
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fm.addr = l.Addr().String()
	dbtest.ServeFake(t, l, 30*time.Second, func() { fm.accepted.Add(1) }, fm.serve)
	return fm
}

// route is the Route to this backend for host.
func (fm *fakeServer) route(host string) dbproxy.Route {
	return dbproxy.Route{Host: host, Backend: fm.addr}
}

// fakeConn is one connection to a fakeServer.
type fakeConn struct {
	conn net.Conn
	seq  byte
	tls  bool
	caps uint32
}

func (c *fakeConn) read() ([]byte, bool) {
	pkt, seq, err := readPacket(c.conn, 1<<20)
	if err != nil || seq != c.seq {
		return nil, false
	}
	c.seq++
	return pkt, true
}

func (c *fakeConn) write(payloads ...[]byte) bool {
	var buf []byte
	for _, p := range payloads {
		buf = appendPacket(buf, c.seq, p)
		c.seq++
	}
	_, err := c.conn.Write(buf)
	return err == nil
}

func (fm *fakeServer) serve(conn net.Conn) {
	c := &fakeConn{conn: conn}
	if fm.greetingERR != nil {
		c.write(fm.greetingERR)
		return
	}
	nonce := make([]byte, scrambleLen)
	rand.Read(nonce)
	for i := range nonce {
		nonce[i] = nonce[i]%94 + 33
	}
	g := &greeting{version: fm.version, connID: 7, caps: fm.caps, charset: 255, status: statusAutocommit, authData: nonce, plugin: fm.plugin}
	if !c.write(g.append(nil)) {
		return
	}
	pkt, ok := c.read()
	if !ok {
		return
	}
	var login fakeLogin
	if isSSLRequest(pkt) {
		if fm.cert == nil {
			return
		}
		login.sslRequestCaps = binary.LittleEndian.Uint32(pkt)
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*fm.cert}})
		if tc.Handshake() != nil {
			return
		}
		c.conn, c.tls = tc, true
		if pkt, ok = c.read(); !ok {
			return
		}
	}
	resp, err := parseHandshakeResponse(pkt)
	if err != nil {
		return
	}
	login.resp, login.tls = resp, c.tls
	c.caps = resp.caps
	fm.logins <- login
	user, known := fm.users[resp.user]
	if !known {
		user = fakeUser{plugin: fm.plugin, password: "\x00unknown"}
	}
	if !fm.authenticate(c, resp, user, nonce) {
		c.write(appendERR(nil, 1045, "28000", fmt.Sprintf("Access denied for user '%s'@'127.0.0.1' (using password: YES)", resp.user)))
		return
	}
	if !c.write(fakeOK(0)) {
		return
	}
	fm.commands(c, resp.user, nonce)
}

// authenticate runs the user's plugin; false means access denied, or a
// broken exchange.
func (fm *fakeServer) authenticate(c *fakeConn, resp *handshakeResponse, u fakeUser, nonce []byte) bool {
	data := resp.authResp
	if resp.plugin != u.plugin {
		if fm.switchNonce != nil {
			nonce = fm.switchNonce
		}
		sw := append([]byte{headerAuthSwitch}, u.plugin...)
		sw = append(sw, 0)
		sw = append(sw, nonce...)
		sw = append(sw, 0)
		if !c.write(sw) {
			return false
		}
		var ok bool
		if data, ok = c.readReply(fm); !ok {
			return false
		}
	}
	switch u.plugin {
	case "mysql_native_password":
		return bytes.Equal(data, nativeScramble(u.password, nonce))
	case pluginCachingSHA2:
		if !bytes.Equal(data, cachingSHA2Scramble(u.password, nonce)) {
			return false
		}
		fm.mu.Lock()
		cached := fm.cached[resp.user]
		fm.mu.Unlock()
		if cached {
			return c.write([]byte{headerAuthMoreData, cachingSHA2FastAuthOK})
		}
		if !c.write([]byte{headerAuthMoreData, cachingSHA2FullAuth}) {
			return false
		}
		if !fm.fullAuth(c, u, nonce, cachingSHA2RequestKey) {
			return false
		}
		fm.mu.Lock()
		fm.cached[resp.user] = true
		fm.mu.Unlock()
		return true
	case pluginSHA256:
		return fm.checkPassword(c, u, nonce, data, sha256RequestKey)
	case "mysql_clear_password":
		return bytes.Equal(data, append([]byte(u.password), 0))
	}
	return false
}

// readReply reads a client packet of the authentication phase and
// records it.
func (c *fakeConn) readReply(fm *fakeServer) ([]byte, bool) {
	pkt, ok := c.read()
	if ok {
		fm.replies <- bytes.Clone(pkt)
	}
	return pkt, ok
}

// fullAuth reads the password as caching_sha2_password's full
// authentication and sha256_password take it.
func (fm *fakeServer) fullAuth(c *fakeConn, u fakeUser, nonce []byte, requestKey byte) bool {
	data, ok := c.readReply(fm)
	if !ok {
		return false
	}
	return fm.checkPassword(c, u, nonce, data, requestKey)
}

// checkPassword checks a password sent in cleartext (TLS only) or RSA
// encrypted, after handing out the public key on request.
func (fm *fakeServer) checkPassword(c *fakeConn, u fakeUser, nonce, data []byte, requestKey byte) bool {
	want := append([]byte(u.password), 0)
	if c.tls {
		return bytes.Equal(data, want)
	}
	if len(data) == 1 && data[0] == requestKey {
		der, _ := x509.MarshalPKIXPublicKey(&fm.key.PublicKey)
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		if !c.write(append([]byte{headerAuthMoreData}, keyPEM...)) {
			return false
		}
		var ok bool
		if data, ok = c.readReply(fm); !ok {
			return false
		}
	}
	plain, err := rsa.DecryptOAEP(sha1.New(), nil, fm.key, data, nil)
	if err != nil {
		return false
	}
	for i := range plain {
		plain[i] ^= nonce[i%len(nonce)]
	}
	return bytes.Equal(plain, want)
}

// commands serves the command phase. COM_CHANGE_USER authenticates as
// the handshake does, with the connection's nonce.
func (fm *fakeServer) commands(c *fakeConn, user string, nonce []byte) {
	for {
		c.seq = 0
		pkt, ok := c.read()
		if !ok || len(pkt) == 0 {
			return
		}
		switch pkt[0] {
		case 0x11: // COM_CHANGE_USER
			resp, ok := parseFakeChangeUser(pkt)
			if !ok {
				return
			}
			fm.logins <- fakeLogin{resp: resp, tls: c.tls}
			u, known := fm.users[resp.user]
			if !known || !fm.authenticate(c, resp, u, nonce) {
				c.write(appendERR(nil, 1045, "28000", fmt.Sprintf("Access denied for user '%s'@'127.0.0.1' (using password: YES)", resp.user)))
				return
			}
			if !c.write(fakeOK(0)) {
				return
			}
			user = resp.user
		case 0x01: // COM_QUIT
			return
		case 0x0e, 0x1f: // COM_PING, COM_RESET_CONNECTION
			if !c.write(fakeOK(0)) {
				return
			}
		case 0x03: // COM_QUERY
			if fm.echo {
				if !c.write([]byte(fm.name + ":" + string(pkt[1:]))) {
					return
				}
				continue
			}
			if !c.write(fakeRow(c.caps, fmt.Sprintf("%s:%s:%t", fm.name, user, c.tls))...) {
				return
			}
		default:
			if !c.write(appendERR(nil, 1047, "08S01", "Unknown command")) {
				return
			}
		}
	}
}

// parseFakeChangeUser reads the user, authentication data and plugin of
// a COM_CHANGE_USER.
func parseFakeChangeUser(b []byte) (*handshakeResponse, bool) {
	user, rest, ok := readNulString(b[1:])
	if !ok || len(rest) == 0 || int(rest[0]) > len(rest)-1 {
		return nil, false
	}
	r := &handshakeResponse{user: string(user), authResp: bytes.Clone(rest[1 : 1+int(rest[0])])}
	db, rest, ok := readNulString(rest[1+int(rest[0]):])
	if !ok || len(rest) < 2 {
		return nil, false
	}
	r.database = string(db)
	plugin, _, ok := readNulString(rest[2:])
	r.plugin = string(plugin)
	return r, ok
}

// fakeOK is an OK packet with the autocommit status.
func fakeOK(header byte) []byte {
	return []byte{header, 0, 0, statusAutocommit, 0, 0, 0}
}

// fakeRow is a text result set of one VARCHAR column "v" and one row,
// ending with EOF packets or, with CLIENT_DEPRECATE_EOF, an OK packet.
func fakeRow(caps uint32, value string) [][]byte {
	lenenc := func(dst []byte, s string) []byte {
		return append(appendLenencInt(dst, uint64(len(s))), s...)
	}
	var col []byte
	for _, s := range []string{"def", "", "", "", "v", ""} {
		col = lenenc(col, s)
	}
	col = append(col, 0x0c, 45, 0, 0, 1, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0)
	out := [][]byte{{1}, col}
	eof := []byte{0xfe, 0, 0, statusAutocommit, 0}
	if caps&capDeprecateEOF == 0 {
		out = append(out, eof)
	}
	out = append(out, lenenc(nil, value))
	if caps&capDeprecateEOF == 0 {
		return append(out, eof)
	}
	return append(out, fakeOK(0xfe))
}

// rawClient is a MySQL client that controls every byte: it checks the
// sequence id of everything it reads.
type rawClient struct {
	t        testing.TB
	conn     net.Conn
	seq      byte
	greeting *greeting
	nonce    []byte // the nonce of the last AuthSwitchRequest, or the greeting's
}

// dialRawClient connects to addr and reads the greeting.
func dialRawClient(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn}
	pkt := c.read()
	g, err := parseGreeting(pkt)
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	c.greeting, c.nonce = g, g.authData
	return c
}

// read reads a packet, which must have the next sequence id.
func (c *rawClient) read() []byte {
	c.t.Helper()
	pkt, seq, err := readPacket(c.conn, 1<<25)
	if err != nil {
		c.t.Fatalf("reading packet: %v", err)
	}
	if seq != c.seq {
		c.t.Fatalf("packet %x has sequence id %d, want %d", pkt, seq, c.seq)
	}
	c.seq++
	return pkt
}

// write sends a packet with the next sequence id.
func (c *rawClient) write(payload []byte) {
	c.t.Helper()
	if err := writePacket(c.conn, c.seq, payload); err != nil {
		c.t.Fatalf("writing packet: %v", err)
	}
	c.seq++
}

// rawClientCaps are the capabilities rawClient asks for.
const rawClientCaps = capLongPassword | capProtocol41 | capSecureConnection | capPluginAuth |
	capPluginAuthLenencData | capTransactions | capMultiResults | capDeprecateEOF | capConnectAttrs

// startTLS sends an SSLRequest and runs TLS with SNI sni, checking the
// certificate for verifyName.
func (c *rawClient) startTLS(ca *dbtest.CA, sni, verifyName string) {
	c.t.Helper()
	req := &handshakeResponse{caps: rawClientCaps | capSSL, maxPacket: 1 << 24, charset: 45}
	c.write(req.appendSSLRequest(nil))
	tc := tls.Client(c.conn, ca.ClientConfig(sni, verifyName))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
}

// response is a HandshakeResponse41 for user with a native password
// answer to the greeting's nonce.
func (c *rawClient) response(user, password, db string) *handshakeResponse {
	caps := uint32(rawClientCaps)
	if _, ok := c.conn.(*tls.Conn); ok {
		caps |= capSSL
	}
	if db != "" {
		caps |= capConnectWithDB
	}
	return &handshakeResponse{
		caps: caps, maxPacket: 1 << 24, charset: 45, user: user,
		authResp: nativeScramble(password, c.greeting.authData), database: db,
		plugin: "mysql_native_password",
		attrs:  []byte("\x0c_client_name\x05rawMy"),
	}
}

// authenticate answers AuthSwitchRequests for mysql_native_password and
// caching_sha2_password (whose full authentication it can do over TLS
// only) until the server's OK or ERR, which it returns.
func (c *rawClient) authenticate(password string) []byte {
	c.t.Helper()
	return c.authenticateFrom(c.read(), password)
}

// authenticateFrom is authenticate with the server's first packet read.
func (c *rawClient) authenticateFrom(pkt []byte, password string) []byte {
	c.t.Helper()
	for ; ; pkt = c.read() {
		switch {
		case pkt[0] == headerAuthSwitch:
			sw, err := parseAuthSwitch(pkt)
			if err != nil {
				c.t.Fatal(err)
			}
			c.nonce = sw.nonce()
			switch sw.plugin {
			case "mysql_native_password":
				c.write(nativeScramble(password, c.nonce))
			case pluginCachingSHA2:
				c.write(cachingSHA2Scramble(password, c.nonce))
			default:
				c.t.Fatalf("rawClient cannot authenticate with %s", sw.plugin)
			}
		case len(pkt) == 2 && pkt[0] == headerAuthMoreData && pkt[1] == cachingSHA2FastAuthOK:
		case len(pkt) == 2 && pkt[0] == headerAuthMoreData && pkt[1] == cachingSHA2FullAuth:
			if _, ok := c.conn.(*tls.Conn); !ok {
				c.t.Fatal("rawClient does caching_sha2_password full authentication over TLS only")
			}
			c.write(append([]byte(password), 0))
		default:
			return pkt
		}
	}
}

// login sends the handshake response (over TLS when startTLS ran) and
// authenticates; it returns the server's final packet.
func (c *rawClient) login(user, password, db string) []byte {
	c.t.Helper()
	c.write(c.response(user, password, db).append(nil))
	return c.authenticate(password)
}

// command sends a command packet (sequence id 0) and reads the first
// packet of the answer.
func (c *rawClient) command(payload []byte) []byte {
	c.t.Helper()
	c.seq = 0
	c.write(payload)
	return c.read()
}

// query runs a text query and returns its first row's first column
// ("NULL" for NULL), reading the whole result. rawClient asks for
// CLIENT_DEPRECATE_EOF: no EOF after the column definitions, and an OK
// packet with header 0xFE after the rows.
func (c *rawClient) query(q string) string {
	c.t.Helper()
	pkt := c.command(append([]byte{0x03}, q...))
	switch pkt[0] {
	case headerERR:
		_, _, msg, _ := parseERR(pkt)
		c.t.Fatalf("%s: %s", q, msg)
	case headerOK:
		return "" // no result set
	}
	n, _, err := readLenencInt(pkt)
	if err != nil || n == 0 {
		c.t.Fatalf("%s: result %x", q, pkt)
	}
	for range n {
		c.read() // column definitions
	}
	value, first := "", true
	for {
		row := c.read()
		if row[0] == 0xfe && len(row) < maxPayload {
			return value
		}
		if !first {
			continue
		}
		first = false
		if row[0] == 0xfb {
			value = "NULL"
			continue
		}
		v, _, err := readLenencBytes(row)
		if err != nil {
			c.t.Fatalf("%s: row %x", q, row)
		}
		value = string(v)
	}
}

// expectERR reads a packet that must be an ERR with code and a message
// containing msg, and then the end of the connection.
func (c *rawClient) expectERR(code uint16, msg string) {
	c.t.Helper()
	pkt := c.read()
	gotCode, _, gotMsg, err := parseERR(pkt)
	if err != nil {
		c.t.Fatalf("got packet %x, want ERR %d %q", pkt, code, msg)
	}
	if gotCode != code || !bytes.Contains([]byte(gotMsg), []byte(msg)) {
		c.t.Errorf("got ERR %d %q, want %d containing %q", gotCode, gotMsg, code, msg)
	}
	c.expectClosed()
}

// expectClosed reads until the end of the connection, which must come.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c.conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Error("connection still open after the ERR packet")
	}
}
