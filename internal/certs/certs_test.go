package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

func TestNewCacheDir(t *testing.T) {
	t.Run("created 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "cache")
		newTestManager(t, Config{CacheDir: dir})
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatalf("cache dir not created: %v", err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("cache dir mode = %v, want 0700", got)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("cache dir holds %v after New, want nothing (no write check file left)", entries)
		}
	})
	t.Run("not writable", func(t *testing.T) {
		// Tests run as root, so a read-only mode would not stop us: use a
		// path under a regular file.
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{file, filepath.Join(file, "cache")} {
			_, err := New(Config{CacheDir: dir})
			if err == nil {
				t.Fatalf("New(CacheDir: %s) succeeded, want an error", dir)
			}
			if !strings.Contains(err.Error(), "cache directory "+dir+" is not writable") {
				t.Errorf("New(CacheDir: %s): got %q, want it to say the cache directory is not writable", dir, err)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "cache directory not set") {
			t.Errorf("New without CacheDir: got %v, want \"cache directory not set\"", err)
		}
	})
}

func TestTLSConfig(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	tests := []struct {
		in   []string
		want []string
	}{
		{in: []string{"h2", "http/1.1"}, want: []string{"h2", "http/1.1", "acme-tls/1"}},
		{in: nil, want: []string{"acme-tls/1"}},
		{in: []string{"acme-tls/1", "h2"}, want: []string{"acme-tls/1", "h2"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		cfg := m.TLSConfig(in...)
		if !slices.Equal(cfg.NextProtos, tt.want) {
			t.Errorf("TLSConfig(%q).NextProtos = %q, want %q", tt.in, cfg.NextProtos, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("TLSConfig modified its argument: %q, want %q", in, tt.in)
		}
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
		}
		if cfg.GetCertificate == nil {
			t.Error("GetCertificate not set")
		}
	}
}

func TestNoServerName(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"db.localhost", "app.localhost"})
	roots := readRoots(t, m.LocalRootPath())

	if _, err := m.GetCertificate(&tls.ClientHelloInfo{}); !errors.Is(err, ErrNoServerName) {
		t.Errorf("GetCertificate without SNI: got %v, want ErrNoServerName", err)
	}
	if _, err := m.GetCertificateFor("", nil); !errors.Is(err, ErrNoServerName) {
		t.Errorf("GetCertificateFor(\"\"): got %v, want ErrNoServerName", err)
	}

	// A Go client dialling an IP address sends no SNI.
	noSNI := &tls.Config{InsecureSkipVerify: true}
	plain := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	if _, err := handshake(plain, noSNI); err == nil {
		t.Error("handshake without SNI on the HTTPS config succeeded, want it refused")
	}

	withDefault := listenTLS(t, "127.0.0.1:0", m.TLSConfigWithDefault("db.localhost"))
	tests := []struct{ sni, want string }{
		{sni: "", want: "db.localhost"},
		{sni: "app.localhost", want: "app.localhost"},
	}
	for _, tt := range tests {
		cfg := &tls.Config{ServerName: tt.sni, RootCAs: roots}
		if tt.sni == "" {
			cfg = noSNI
		}
		cs, err := handshake(withDefault, cfg)
		if err != nil {
			t.Fatalf("handshake with SNI %q on the default config: %v", tt.sni, err)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tt.want, Roots: roots}); err != nil {
			t.Errorf("SNI %q: got a certificate for %v, want one for %s: %v", tt.sni, leaf.DNSNames, tt.want, err)
		}
	}
	if _, err := handshake(withDefault, &tls.Config{ServerName: "other.localhost", RootCAs: roots}); err == nil {
		t.Error("handshake with an unmapped SNI on the default config succeeded, want it refused")
	}
	challenge := &tls.Config{ServerName: "db.localhost", InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}}
	if _, err := handshake(withDefault, challenge); err == nil {
		t.Error("acme-tls/1 handshake on the default config succeeded, want it refused")
	}
}

func TestHTTPHandler(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"www.example.com"})
	var fallbackHits atomic.Int32
	h := m.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fallbackHits.Add(1)
		io.WriteString(w, "fallback")
	}))
	tests := []struct {
		name, host, path string
		wantCode         int
		wantFallback     bool
	}{
		{name: "other path", host: "www.example.com:8080", path: "/index.html", wantCode: 200, wantFallback: true},
		{name: "other path, other host", host: "evil.example", path: "/", wantCode: 200, wantFallback: true},
		// Allowed host with a port: passes the policy, finds no token.
		{name: "challenge with port", host: "www.example.com:8080", path: "/.well-known/acme-challenge/tok", wantCode: 404},
		{name: "challenge without port", host: "WWW.example.com", path: "/.well-known/acme-challenge/tok", wantCode: 404},
		{name: "challenge other host", host: "evil.example:8080", path: "/.well-known/acme-challenge/tok", wantCode: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fallbackHits.Load()
			r := httptest.NewRequest("GET", "http://"+tt.host+tt.path, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.wantCode {
				t.Errorf("status %d, want %d (body %q)", w.Code, tt.wantCode, w.Body)
			}
			if got := fallbackHits.Load() > before; got != tt.wantFallback {
				t.Errorf("fallback called: %v, want %v", got, tt.wantFallback)
			}
			if r.Host != tt.host {
				t.Errorf("handler changed the caller's request Host to %q", r.Host)
			}
		})
	}

	redirect := m.HTTPHandler(nil)
	w := httptest.NewRecorder()
	redirect.ServeHTTP(w, httptest.NewRequest("GET", "http://evil.example/a", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("nil fallback, unmapped host: got %d, want 404 (no redirect)", w.Code)
	}
	w = httptest.NewRecorder()
	redirect.ServeHTTP(w, httptest.NewRequest("GET", "http://www.example.com:8080/a?b=c", nil))
	if got, want := w.Header().Get("Location"), "https://www.example.com:443/a?b=c"; w.Code != http.StatusFound || got != want {
		t.Errorf("nil fallback: got %d %q, want 302 %q", w.Code, got, want)
	}
}

func TestConcurrentSetHostsAndHandshakes(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"a.localhost"})
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	roots := readRoots(t, m.LocalRootPath())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m.SetHosts([]string{"a.localhost", "b" + strconv.Itoa(i%3) + ".localhost"})
			m.Status()
			time.Sleep(100 * time.Microsecond)
		}
	})
	for range 20 {
		if _, err := handshake(addr, &tls.Config{ServerName: "a.localhost", RootCAs: roots}); err != nil {
			t.Errorf("handshake for a name on every allow-list: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	m.SetHosts([]string{"b0.localhost"})
	if _, err := handshake(addr, &tls.Config{ServerName: "a.localhost", RootCAs: roots}); err == nil {
		t.Error("handshake for a name removed from the allow-list succeeded")
	}
}

// failingACME is an ACME "server" that refuses every request (403: the
// ACME client retries 5xx answers until its deadline).
func failingACME(t *testing.T) (dirURL string, roots *x509.CertPool, requests *atomic.Int32) {
	t.Helper()
	requests = new(atomic.Int32)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "refused", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	roots = x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv.URL + "/dir", roots, requests
}

func TestFailureLoggedAndRateLimited(t *testing.T) {
	dirURL, roots, requests := failingACME(t)
	logger, logs := newTestLogger()
	clock := newFakeClock(time.Now())
	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: dirURL, RootCAs: roots, Logger: logger, clock: clock})
	m.SetHosts([]string{"www.example.com"})

	for range 3 {
		if _, err := m.GetCertificate(ecdsaHello("www.example.com")); err == nil {
			t.Fatal("GetCertificate succeeded against a broken ACME server")
		}
	}
	if requests.Load() == 0 {
		t.Error("no request reached the ACME server")
	}
	if got := logs.count("certificate failed", "host=www.example.com"); got != 1 {
		t.Errorf("%d \"certificate failed\" records, want 1; log:\n%s", got, logs)
	}
	st := m.Status()
	if len(st) != 1 || st[0].LastError == "" || !st[0].LastAttempt.Equal(clock.Now()) {
		t.Errorf("Status() = %+v, want one entry with LastError and LastAttempt %v", st, clock.Now())
	}
	if strings.Contains(st[0].LastError, "missing certificate") {
		t.Errorf("LastError = %q, want the real failure, not autocert's retry placeholder", st[0].LastError)
	}

	// A name not on the list: an error, no log, no request.
	before := requests.Load()
	if _, err := m.GetCertificate(ecdsaHello("other.example.com")); err == nil {
		t.Error("GetCertificate for an unmapped name succeeded")
	}
	if got := requests.Load(); got != before {
		t.Errorf("unmapped name made %d ACME requests, want 0", got-before)
	}
	if got := logs.count("certificate failed", "host=other.example.com"); got != 0 {
		t.Errorf("unmapped name logged %d failures, want 0", got)
	}
}

func TestCloseStopsACMERequests(t *testing.T) {
	dirURL, roots, requests := failingACME(t)
	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: dirURL, RootCAs: roots})
	m.SetHosts([]string{"www.example.com"})
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := m.GetCertificate(ecdsaHello("www.example.com"))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("GetCertificate after Close: got %v, want ErrClosed", err)
	}
	if got := requests.Load(); got != 0 {
		t.Errorf("%d ACME requests after Close, want 0", got)
	}
}

// pebbleManager starts Pebble and a Manager using it, with hosts allowed.
func pebbleManager(t *testing.T, p *testenv.Pebble, cacheDir string, hosts ...string) (*Manager, *logBuffer) {
	t.Helper()
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{
		CacheDir:     cacheDir,
		DirectoryURL: p.DirectoryURL,
		RootCAs:      p.ServerRoots,
		Email:        "admin@example.com",
		Logger:       logger,
	})
	m.SetHosts(hosts)
	return m, logs
}

func TestACMETLSALPN01(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	cacheDir := t.TempDir()
	m, logs := pebbleManager(t, p, cacheDir, "www.example.test")
	addr := listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("h2", "http/1.1"))
	issuerRoots := p.IssuerRoots(t)

	cs, err := handshake(addr, &tls.Config{ServerName: "www.example.test", RootCAs: issuerRoots})
	if err != nil {
		t.Fatalf("first handshake (obtains the certificate by tls-alpn-01): %v", err)
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, "www.example.test") {
		t.Errorf("certificate for %v, want www.example.test", leaf.DNSNames)
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders, want 1", got)
	}
	if got := logs.count("certificate obtained", "host=www.example.test", "key=ecdsa", "source=acme",
		`cert_issuer="`+leaf.Issuer.CommonName+`"`); got != 1 {
		t.Errorf("%d \"certificate obtained\" records with host, issuer, key, want 1; log:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "not_after="+leaf.NotAfter.UTC().Format("2006-01-02T15:04:05")) {
		t.Errorf("log lacks not_after=%s:\n%s", leaf.NotAfter.UTC(), logs)
	}
	st := m.Status()
	if len(st) != 1 || st[0].Issuer != leaf.Issuer.CommonName || !st[0].NotAfter.Equal(leaf.NotAfter) || st[0].LastError != "" || st[0].Local {
		t.Errorf("Status() = %+v, want issuer %q, not after %v, no error", st, leaf.Issuer.CommonName, leaf.NotAfter)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "www.example.test")); err != nil {
		t.Errorf("certificate not in the cache (autocert DirCache format): %v", err)
	}

	// Second handshake: same certificate, no order.
	cs2, err := handshake(addr, &tls.Config{ServerName: "www.example.test", RootCAs: issuerRoots})
	if err != nil {
		t.Fatalf("second handshake: %v", err)
	}
	if !cs2.PeerCertificates[0].Equal(leaf) {
		t.Error("second handshake served another certificate")
	}

	// An unmapped name: refused, no order.
	if _, err := handshake(addr, &tls.Config{ServerName: "other.example.test", RootCAs: issuerRoots}); err == nil {
		t.Error("handshake for an unmapped name succeeded")
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders after the unmapped name, want 1", got)
	}

	// A second Manager on the same cache serves the cached certificate.
	m2, logs2 := pebbleManager(t, p, cacheDir, "www.example.test")
	if st := m2.Status(); len(st) != 1 || !st[0].NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("second Manager Status() before any handshake = %+v, want the cached certificate's expiry %v", st, leaf.NotAfter)
	}
	c, err := m2.GetCertificate(ecdsaHello("www.example.test"))
	if err != nil {
		t.Fatalf("second Manager: %v", err)
	}
	if !c.Leaf.Equal(leaf) {
		t.Error("second Manager served another certificate, want the cached one")
	}
	if err := verifyChain(c.Certificate, "www.example.test", issuerRoots); err != nil {
		t.Errorf("cached chain does not verify: %v", err)
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("Pebble saw %d orders after the second Manager, want 1", got)
	}
	if got := logs2.count("certificate obtained"); got != 0 {
		t.Errorf("second Manager logged %d obtained certificates, want 0", got)
	}
}

func TestACMEHTTP01(t *testing.T) {
	// Nothing listens on tlsPort, so tls-alpn-01 fails and autocert falls
	// back to http-01, which the Manager answers on httpPort.
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	m, logs := pebbleManager(t, p, t.TempDir(), "web.example.test")

	var mu sync.Mutex
	var challenges []string // "host path status"
	h := m.HTTPHandler(http.NotFoundHandler())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			mu.Lock()
			challenges = append(challenges, r.Host+" "+r.URL.Path+" "+strconv.Itoa(rec.Code))
			mu.Unlock()
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})

	c, err := m.GetCertificate(ecdsaHello("web.example.test"))
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if err := verifyChain(c.Certificate, "web.example.test", p.IssuerRoots(t)); err != nil {
		t.Errorf("chain does not verify: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	wantPrefix := "web.example.test:" + strconv.Itoa(httpPort) + " /.well-known/acme-challenge/"
	answered := false
	for _, ch := range challenges {
		if strings.HasPrefix(ch, wantPrefix) && strings.HasSuffix(ch, " 200") {
			answered = true
		}
	}
	if !answered {
		t.Errorf("no http-01 challenge answered with 200 for Host with port; requests: %q", challenges)
	}
	if got := logs.count("certificate obtained", "host=web.example.test"); got != 1 {
		t.Errorf("%d \"certificate obtained\" records, want 1; log:\n%s", got, logs)
	}
}

func TestACMERSAForLegacyClients(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	m, logs := pebbleManager(t, p, t.TempDir(), "legacy.example.test")
	addr := listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))

	rsaOnly := &tls.Config{
		ServerName:   "legacy.example.test",
		RootCAs:      p.IssuerRoots(t),
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
	}
	cs, err := handshake(addr, rsaOnly)
	if err != nil {
		t.Fatalf("handshake of an RSA-only client: %v", err)
	}
	if alg := cs.PeerCertificates[0].PublicKeyAlgorithm; alg != x509.RSA {
		t.Errorf("RSA-only client got a %v certificate, want RSA", alg)
	}
	if got := logs.count("certificate obtained", "host=legacy.example.test", "key=rsa"); got != 1 {
		t.Errorf("%d RSA \"certificate obtained\" records, want 1; log:\n%s", got, logs)
	}
}
