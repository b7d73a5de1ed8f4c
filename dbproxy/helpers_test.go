package dbproxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dbproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate for names (DNS names or IP addresses)
// and its chain and key in PEM.
func (ca *testCA) issue(t testing.TB, names ...string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

// certSource is a GetCertificate that knows only the names it was made
// for, as the certificate manager knows only mapped names: the Server must
// ask for the default's certificate itself.
func (ca *testCA) certSource(t testing.TB, names ...string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	certs := make(map[string]*tls.Certificate)
	for _, n := range names {
		c, _, _ := ca.issue(t, n)
		certs[n] = &c
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c, ok := certs[hello.ServerName]; ok {
			return c, nil
		}
		return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// records returns the JSON log records with message msg.
func (b *syncBuffer) records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// testProxy is a Server under test on 127.0.0.1.
type testProxy struct {
	srv   *Server
	addr  string
	ca    *testCA
	proto *postgres
	logs  *syncBuffer
}

// startProxy starts a postgres Server for cfg, filling in the protocol, a
// certificate source from ca for every route host and a JSON logger, and
// shuts it down when the test ends.
func startProxy(t testing.TB, ca *testCA, cfg Config) *testProxy {
	t.Helper()
	p := &testProxy{ca: ca, logs: new(syncBuffer)}
	if cfg.Protocol == nil {
		proto, ok := Lookup("postgres")
		if !ok {
			t.Fatal("postgres is not registered")
		}
		cfg.Protocol = proto
	}
	p.proto, _ = cfg.Protocol.(*postgres)
	if cfg.GetCertificate == nil {
		var hosts []string
		for _, r := range cfg.Routes {
			hosts = append(hosts, r.Host)
		}
		cfg.GetCertificate = ca.certSource(t, hosts...)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(p.logs, nil))
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv, p.addr = srv, l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return p
}

// dial connects to the proxy; the connection closes when the test ends.
func (p *testProxy) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Client-side wire helpers.

func startupBytes(major, minor uint16, params ...string) []byte {
	b := []byte{0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, uint32(major)<<16|uint32(minor))
	for _, p := range params {
		b = append(b, p...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func requestBytes(code uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code)
}

func cancelBytes(pid uint32, key []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(12+len(key)))
	b = binary.BigEndian.AppendUint32(b, cancelRequestCode)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, key...)
}

func mustWrite(t testing.TB, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readByte reads the one-byte answer to an SSLRequest or GSSENCRequest.
func readByte(t testing.TB, r io.Reader) byte {
	t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	return b[0]
}

// clientTLS is a TLS client trusting ca, with SNI sni ("" for none: then
// the certificate is checked for verifyName) and ALPN alpn.
func clientTLS(conn net.Conn, ca *testCA, sni, verifyName string, alpn ...string) *tls.Conn {
	cfg := &tls.Config{ServerName: sni, RootCAs: ca.pool, NextProtos: alpn}
	if sni == "" || verifyName != sni {
		// Verify by hand: Go sends no SNI without a ServerName, and we
		// want to know which certificate came back.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: verifyName, Roots: ca.pool, Intermediates: inter})
			return err
		}
	}
	return tls.Client(conn, cfg)
}

// sslRequest sends an SSLRequest, expects 'S' and completes TLS.
func sslRequest(t testing.TB, conn net.Conn, ca *testCA, sni, verifyName string, alpn ...string) net.Conn {
	t.Helper()
	mustWrite(t, conn, requestBytes(sslRequestCode))
	if got := readByte(t, conn); got != 'S' {
		t.Fatalf("SSLRequest answer: got %q, want 'S'", got)
	}
	tc := clientTLS(conn, ca, sni, verifyName, alpn...)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return tc
}

// startupResult is what a client read after its StartupMessage.
type startupResult struct {
	err     *pgproto3.ErrorResponse // the ErrorResponse, if any
	pid     uint32
	key     []byte
	params  map[string]string
	readErr error // the read that ended it, when neither Z nor E came
}

// readStartup reads backend messages until ReadyForQuery, an
// ErrorResponse or a read error.
func readStartup(t testing.TB, fe *pgproto3.Frontend) startupResult {
	t.Helper()
	res := startupResult{params: map[string]string{}}
	for {
		msg, err := fe.Receive()
		if err != nil {
			res.readErr = err
			return res
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			e := *m
			res.err = &e
			return res
		case *pgproto3.BackendKeyData:
			res.pid, res.key = m.ProcessID, bytes.Clone(m.SecretKey)
		case *pgproto3.ParameterStatus:
			res.params[m.Name] = m.Value
		case *pgproto3.ReadyForQuery:
			return res
		}
	}
}

// query sends a simple query and returns the CommandComplete tag.
func query(t testing.TB, fe *pgproto3.Frontend, sql string) string {
	t.Helper()
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatalf("sending query: %v", err)
	}
	var tag string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("reading query result: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			tag = string(m.CommandTag)
		case *pgproto3.ErrorResponse:
			t.Fatalf("query error: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return tag
		}
	}
}

// fakeBackend is a minimal PostgreSQL server: it trusts or asks a
// cleartext password, sends BackendKeyData with its pid and key, answers
// every simple query with CommandComplete "<name>:<tls>:<query>", and
// reports cancel requests. Driven by pgproto3.
type fakeBackend struct {
	name     string
	addr     string
	pid      uint32
	key      []byte
	password string           // "" trusts
	cert     *tls.Certificate // accepts SSLRequest when set
	// asyncAfterReady is sent right after the first ReadyForQuery, in the
	// same write, as a server's asynchronous messages may be.
	asyncAfterReady []byte

	accepted atomic.Int32
	cancels  chan cancelKey
	startups chan map[string]string
}

func startFakeBackend(t testing.TB, fb *fakeBackend) *fakeBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb.addr = l.Addr().String()
	fb.cancels = make(chan cancelKey, 16)
	fb.startups = make(chan map[string]string, 64)
	serveFake(t, l, 30*time.Second, func() { fb.accepted.Add(1) }, fb.serve)
	return fb
}

func (fb *fakeBackend) serve(c net.Conn) {
	conn := c
	secure := false
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 8 || n > 10000 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(conn, body); err != nil {
			return
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case sslRequestCode:
			if fb.cert == nil || secure {
				conn.Write([]byte{'N'})
				continue
			}
			conn.Write([]byte{'S'})
			tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*fb.cert}})
			if tc.Handshake() != nil {
				return
			}
			conn, secure = tc, true
			continue
		case cancelRequestCode:
			var req pgproto3.CancelRequest
			if req.Decode(body) == nil {
				fb.cancels <- cancelKey{pid: req.ProcessID, key: string(req.SecretKey)}
			}
			return
		}
		var sm pgproto3.StartupMessage
		if err := sm.Decode(body); err != nil {
			return
		}
		fb.startups <- sm.Parameters
		be := pgproto3.NewBackend(conn, conn)
		if fb.password != "" {
			be.Send(&pgproto3.AuthenticationCleartextPassword{})
			if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
				return
			}
			msg, err := be.Receive()
			if err != nil {
				return
			}
			if pw, ok := msg.(*pgproto3.PasswordMessage); !ok || pw.Password != fb.password {
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
				be.Flush()
				return
			}
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "17.0 (" + fb.name + ")"})
		be.Send(&pgproto3.BackendKeyData{ProcessID: fb.pid, SecretKey: fb.key})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		if be.Flush() != nil {
			return
		}
		if len(fb.asyncAfterReady) > 0 {
			conn.Write(fb.asyncAfterReady)
		}
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			switch m := msg.(type) {
			case *pgproto3.Query:
				be.Send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "%s:%t:%s", fb.name, secure, m.String)})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
			case *pgproto3.Terminate:
				return
			}
		}
	}
}

// route is the Route to this backend for host.
func (fb *fakeBackend) route(host string) Route {
	return Route{Host: host, Backend: fb.addr}
}

// serveFake accepts connections on l until the test ends and serves each in
// its own goroutine under a deadline of d; onAccept, if not nil, runs for
// each accepted connection. Cleanup closes l and every open connection and
// waits for the goroutines.
func serveFake(t testing.TB, l net.Listener, d time.Duration, onAccept func(), serve func(net.Conn)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if onAccept != nil {
				onAccept()
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(d))
				serve(c)
			}()
		}
	}()
}
