// Package testenv holds test-only helpers: an in-process ACME server
// (Pebble) and starters for real servers on free 127.0.0.1 ports.
package testenv

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// pebbleNewOrderPath is the path of Pebble's newOrder endpoint
// (wfe.newOrderPath, unexported there).
const pebbleNewOrderPath = "/order-plz"

// pebbleFinalizePath starts the path of Pebble's finalize endpoint
// (wfe.orderFinalizePath).
const pebbleFinalizePath = "/finalize-order/"

// pebbleLogTail bounds how much of Pebble's log is kept for a failing test.
const pebbleLogTail = 64 << 10

// Pebble is an in-process ACME server (Pebble) with challtestsrv as its DNS
// resolver; every name resolves to 127.0.0.1 (IPv4 only). It validates
// http-01 on 127.0.0.1:httpPort and tls-alpn-01 on 127.0.0.1:tlsPort.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir.
	DirectoryURL string
	// ServerRoots trusts Pebble's own HTTPS endpoint (the httptest
	// certificate), for the ACME client's HTTP client.
	ServerRoots *x509.CertPool
	// ServerCAFile is ServerRoots as a PEM file (for the -acme-ca flag).
	ServerCAFile string

	ca        *ca.CAImpl
	mgmt      http.Handler // Pebble's management API
	orders    atomic.Int64
	finalizes atomic.Int64
}

// PebbleOption changes how StartPebble configures Pebble.
type PebbleOption func(*pebbleConfig)

// pebbleConfig is what PebbleOptions set.
type pebbleConfig struct {
	profiles   map[string]ca.Profile
	requireEAB bool
	eabKeys    map[string]string // key ID → base64url HMAC key
	dnsAddr    string            // the VA's DNS server; "" starts challtestsrv
}

// WithPebbleDNS makes Pebble's VA ask dnsAddr (host:port, over TCP)
// instead of challtestsrv: dns-01 validations query it, as do the A
// lookups of the other challenge types.
func WithPebbleDNS(dnsAddr string) PebbleOption {
	return func(c *pebbleConfig) { c.dnsAddr = dnsAddr }
}

// WithPebbleProfiles makes Pebble offer these ACME profiles (the
// directory's meta.profiles), each issuing certificates valid for its
// duration (whole seconds), instead of its one "default" profile.
func WithPebbleProfiles(validity map[string]time.Duration) PebbleOption {
	return func(c *pebbleConfig) {
		c.profiles = make(map[string]ca.Profile, len(validity))
		for name, d := range validity {
			c.profiles[name] = ca.Profile{Description: name, ValidityPeriod: uint64(d / time.Second)} // #nosec G115 -- test durations are positive
		}
	}
}

// WithPebbleEAB makes Pebble require External Account Binding for new
// accounts and accept the given keys (key ID → base64url HMAC key).
func WithPebbleEAB(keys map[string]string) PebbleOption {
	return func(c *pebbleConfig) {
		c.requireEAB = true
		c.eabKeys = keys
	}
}

// StartPebble starts Pebble for the test and stops it in t.Cleanup. It sets
// Pebble's environment knobs with t.Setenv (no random VA sleeps, no
// rejected nonces, no authorization reuse), so it cannot be used from
// parallel tests. Pebble's log is shown only when the test fails.
//
// Pebble's VA has no way to be stopped: one idle goroutine per call
// outlives the test.
func StartPebble(t testing.TB, httpPort, tlsPort int, opts ...PebbleOption) *Pebble {
	t.Helper()
	cfg := pebbleConfig{profiles: map[string]ca.Profile{"default": {}}}
	for _, o := range opts {
		o(&cfg)
	}
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")

	logBuf := &tailBuffer{max: pebbleLogTail}
	logger := log.New(logBuf, "pebble ", log.Lmicroseconds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log (tail):\n%s", logBuf.String())
		}
	})

	dnsAddr := cfg.dnsAddr
	if dnsAddr == "" {
		dnsAddr = startDNS(t, logger)
	}

	store := db.NewMemoryStore()
	for kid, key := range cfg.eabKeys {
		if err := store.AddExternalAccountKeyByID(kid, key); err != nil {
			t.Fatalf("pebble: adding EAB key %s: %v", kid, err)
		}
	}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, cfg.profiles)
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	frontEnd := wfe.New(logger, store, validator, authority, nil, false, cfg.requireEAB, 0, 0)

	p := &Pebble{ca: authority, mgmt: frontEnd.ManagementHandler()}
	acmeHandler := frontEnd.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == pebbleNewOrderPath {
			p.orders.Add(1)
		}
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, pebbleFinalizePath) {
			p.finalizes.Add(1)
		}
		acmeHandler.ServeHTTP(w, r)
	}))
	srv.Config.ErrorLog = logger
	srv.StartTLS()
	t.Cleanup(srv.Close)

	p.DirectoryURL = srv.URL + wfe.DirectoryPath
	p.ServerRoots = x509.NewCertPool()
	p.ServerRoots.AddCert(srv.Certificate())
	p.ServerCAFile = writePEM(t, "pebble-server-ca.pem", srv.Certificate())
	return p
}

// IssuerRoots returns the roots of the certificates Pebble issues. Pebble
// sends the intermediate with every certificate, so the roots suffice to
// verify a served chain.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range p.issuerRoots(t) {
		pool.AddCert(c)
	}
	return pool
}

// IssuerRootFile writes the roots of the certificates Pebble issues to a PEM
// file in a test temporary directory and returns its path (for clients that
// take a CA file, such as psql's sslrootcert).
func (p *Pebble) IssuerRootFile(t testing.TB) string {
	t.Helper()
	return writePEM(t, "pebble-issuer-roots.pem", p.issuerRoots(t)...)
}

func (p *Pebble) issuerRoots(t testing.TB) []*x509.Certificate {
	t.Helper()
	var roots []*x509.Certificate
	for i := range p.ca.GetNumberOfRootCerts() {
		root := p.ca.GetRootCert(i)
		if root == nil || root.Cert == nil {
			t.Fatalf("pebble: no root certificate %d", i)
		}
		roots = append(roots, root.Cert)
	}
	if len(roots) == 0 {
		t.Fatal("pebble: no root certificates")
	}
	return roots
}

// SetRenewalInfo makes Pebble answer ariResponse, verbatim (malformed JSON
// included), to ACME Renewal Information requests for cert, through
// Pebble's management API (POST /set-renewal-info/).
func (p *Pebble) SetRenewalInfo(t testing.TB, cert *x509.Certificate, ariResponse string) {
	t.Helper()
	body, err := json.Marshal(struct{ Certificate, ARIResponse string }{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		ARIResponse: ariResponse,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/set-renewal-info/", bytes.NewReader(body))
	req.Header.Set("User-Agent", "leproxy-test")
	p.mgmt.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("pebble: set-renewal-info: %d %s", rec.Code, rec.Body)
	}
}

// Orders reports how many new-order requests Pebble has received.
func (p *Pebble) Orders() int {
	return int(p.orders.Load())
}

// Finalizes reports how many finalize requests (CSRs) Pebble has received.
func (p *Pebble) Finalizes() int {
	return int(p.finalizes.Load())
}

// startDNS starts challtestsrv's DNS server (TCP and UDP) on a free
// 127.0.0.1 port, answering 127.0.0.1 for every A query and nothing for
// AAAA, and returns its address once it accepts TCP connections.
func startDNS(t testing.TB, logger *log.Logger) string {
	t.Helper()
	addr := freeTCPAndUDP(t)
	srv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{addr}, Log: logger})
	if err != nil {
		t.Fatalf("creating challtestsrv: %v", err)
	}
	srv.SetDefaultDNSIPv4("127.0.0.1")
	srv.SetDefaultDNSIPv6("")
	srv.Run()
	t.Cleanup(srv.Shutdown)

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("challtestsrv DNS on %s not accepting connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeTCPAndUDP returns a 127.0.0.1 address whose port is free for both TCP
// and UDP.
func freeTCPAndUDP(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// writePEM writes certs as one PEM file in a test temporary directory.
func writePEM(t testing.TB, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var buf bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			t.Fatalf("encoding %s: %v", name, err)
		}
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("writing %s: %v", name, err)
	}
	return path
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent
// use, and usable after the test has ended (Pebble's goroutines may still
// log then, which t.Logf would not allow).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
