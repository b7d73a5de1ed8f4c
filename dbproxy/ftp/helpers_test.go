package ftp_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	_ "github.com/leproxy/leproxy/dbproxy/ftp"
	"github.com/leproxy/leproxy/internal/testenv"
)

// host is the route's name, and the certificate's.
const host = "ftp.test"

// fixture is a vsftpd behind leproxy.
type fixture struct {
	v     *testenv.VSFTPD
	p     *dbtest.Proxy
	ca    *dbtest.CA
	proto string
}

// fixtureOptions say how to set one up.
type fixtureOptions struct {
	proto      string // "ftp" (default) or "ftps"
	backendTLS bool   // vsftpd with TLS and require_ssl_reuse; the route with tls: verify
	mod        func(*dbproxy.Config)
}

// start starts vsftpd and leproxy in front of it, with one data port
// reserved for leproxy's passive range.
func start(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	if o.proto == "" {
		o.proto = "ftp"
	}
	var vo testenv.VSFTPDOptions
	route := dbproxy.Route{Host: host}
	if o.backendTLS {
		bca := dbtest.NewCA(t)
		_, certPEM, keyPEM := bca.Issue(t, "127.0.0.1")
		dir := t.TempDir()
		vo.CertFile, vo.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(vo.CertFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vo.KeyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		route.TLS, route.RootCAs = dbproxy.TLSVerify, bca.Pool
	}
	v := testenv.StartVSFTPD(t, vo)
	route.Backend = v.Addr
	proto, _ := dbproxy.Lookup(o.proto)
	ca := dbtest.NewCA(t)
	cfg := dbproxy.Config{
		Protocol: proto,
		Routes:   []dbproxy.Route{route},
		Default:  host,
		Options:  map[string]string{"passive_ports": strconv.Itoa(testenv.FreePort(t))},
	}
	if o.mod != nil {
		o.mod(&cfg)
	}
	p := dbtest.StartProxy(t, ca, cfg)
	return &fixture{v: v, p: p, ca: ca, proto: o.proto}
}

// clientTLS is a client's TLS config for the proxy, with a session cache
// so that data connections resume the control connection's session.
func (f *fixture) clientTLS() *tls.Config {
	cfg := f.ca.ClientConfig(host, host)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	return cfg
}

// writeCA writes the proxy CA's certificate to a file for CLI clients.
func (f *fixture) writeCA(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, f.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// port is the proxy's port.
func (f *fixture) port() string {
	_, p, _ := net.SplitHostPort(f.p.Addr)
	return p
}

// randomData returns n deterministic pseudo-random bytes.
func randomData(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// bigSize is the size of the files moved: 20 MB.
const bigSize = 20 << 20

// wantFile fails unless the file at path holds want.
func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, path, got, want)
}

// wantSame fails unless got and want are the same bytes.
func wantSame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha256 %x), want %d (sha256 %x)", what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// putFile puts data into the backend's pub directory as name, readable by
// the anonymous user.
func (f *fixture) putFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.v.Pub, name), data, 0o644); err != nil { // #nosec G306 -- vsftpd's anonymous user reads it
		t.Fatal(err)
	}
}

// raw is a hand-driven FTP client, for what real clients never send.
type raw struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

// dialRaw connects to the proxy and reads the greeting.
func (f *fixture) dialRaw(t *testing.T) *raw {
	t.Helper()
	c := f.p.Dial(t)
	r := &raw{t: t, conn: c, tp: textproto.NewConn(c)}
	r.want(220)
	return r
}

// want reads a reply and fails unless it has code; it returns the text.
func (r *raw) want(code int) string {
	r.t.Helper()
	got, msg, err := r.tp.ReadResponse(0)
	if err != nil && got == 0 {
		r.t.Fatalf("reading a reply (want %d): %v", code, err)
	}
	if got != code {
		r.t.Fatalf("got reply %d %q, want %d", got, msg, code)
	}
	return msg
}

// cmd sends a command and wants code.
func (r *raw) cmd(code int, line string) string {
	r.t.Helper()
	if err := r.tp.PrintfLine("%s", line); err != nil {
		r.t.Fatal(err)
	}
	return r.want(code)
}

// startTLS runs AUTH TLS (for ftp; ftps is TLS already) and logs in as
// anonymous with PBSZ 0 and PROT P.
func (r *raw) login(cfg *tls.Config, explicit bool) {
	r.t.Helper()
	if explicit {
		r.cmd(234, "AUTH TLS")
		tc := tls.Client(r.conn, cfg)
		if err := tc.Handshake(); err != nil {
			r.t.Fatalf("TLS handshake: %v", err)
		}
		r.conn, r.tp = tc, textproto.NewConn(tc)
	}
	r.cmd(230, "USER anonymous") // no_anon_password
	r.cmd(200, "PBSZ 0")
	r.cmd(200, "PROT P")
	r.cmd(200, "TYPE I")
}

// epsv sends EPSV and returns the data address the proxy gave.
func (r *raw) epsv() string {
	r.t.Helper()
	msg := r.cmd(229, "EPSV")
	i, j := strings.Index(msg, "(|||"), strings.LastIndex(msg, "|)")
	if i < 0 || j < i {
		r.t.Fatalf("EPSV reply %q", msg)
	}
	return net.JoinHostPort("127.0.0.1", msg[i+4:j])
}

// deadline is for what a test waits on.
const deadline = 20 * time.Second

func newTextproto(c net.Conn) *textproto.Conn { return textproto.NewConn(c) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// retr runs a download on a data connection to addr, its TLS with cfg,
// and returns the bytes; the final reply must be 226.
func (r *raw) retr(cfg *tls.Config, addr, cmd string) []byte {
	r.t.Helper()
	dc, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		r.t.Fatal(err)
	}
	defer dc.Close()
	r.cmd(150, cmd)
	tc := tls.Client(dc, cfg)
	tc.SetDeadline(time.Now().Add(deadline))
	got, err := io.ReadAll(tc)
	if err != nil {
		r.t.Fatalf("reading the data connection: %v", err)
	}
	r.want(226)
	return got
}
