package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/leproxy/leproxy/internal/testenv"
)

func TestParseIssuers(t *testing.T) {
	dir := t.TempDir()
	eabFile := filepath.Join(dir, "zerossl.eab")
	if err := os.WriteFile(eabFile, []byte("kid-1\n  c2VjcmV0LWtleQ\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFile := filepath.Join(dir, "bad.eab")
	if err := os.WriteFile(badFile, []byte("only-one-field\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ZEROSSL_EAB": "kid-env c2VjcmV0"}
	getenv := func(k string) string { return env[k] }
	custom := "https://ca.example.net/acme/dir?x=1"
	tests := []struct {
		name  string
		flags IssuerFlags
		want  []IssuerConfig
		local bool
		err   string
	}{
		{name: "one", flags: IssuerFlags{ACME: "letsencrypt"},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL}}},
		{name: "list", flags: IssuerFlags{ACME: "LetsEncrypt, zerossl," + custom},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL}, {Name: "zerossl", DirectoryURL: ZeroSSLURL}, {Name: custom, DirectoryURL: custom}}},
		{name: "local", flags: IssuerFlags{ACME: "local"}, local: true},
		{name: "local in a list", flags: IssuerFlags{ACME: "letsencrypt,local"}, err: "local cannot be combined"},
		{name: "twice", flags: IssuerFlags{ACME: "zerossl," + ZeroSSLURL}, err: "listed twice"},
		{name: "empty entry", flags: IssuerFlags{ACME: "letsencrypt,,zerossl"}, err: "empty entry"},
		{name: "unknown", flags: IssuerFlags{ACME: "letsencrypt,buypass"}, err: `unknown ACME directory "buypass"`},
		{name: "eab file", flags: IssuerFlags{ACME: "letsencrypt,zerossl", EAB: "zerossl=" + eabFile},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL}, {Name: "zerossl", DirectoryURL: ZeroSSLURL, EABKeyID: "kid-1", EABHMAC: "c2VjcmV0LWtleQ"}}},
		{name: "eab env by position", flags: IssuerFlags{ACME: "letsencrypt,zerossl", EAB: "2=env:ZEROSSL_EAB", Getenv: getenv},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL}, {Name: "zerossl", DirectoryURL: ZeroSSLURL, EABKeyID: "kid-env", EABHMAC: "c2VjcmV0"}}},
		{name: "eab for a URL with '='", flags: IssuerFlags{ACME: custom, EAB: custom + "=" + eabFile},
			want: []IssuerConfig{{Name: custom, DirectoryURL: custom, EABKeyID: "kid-1", EABHMAC: "c2VjcmV0LWtleQ"}}},
		{name: "eab without issuer", flags: IssuerFlags{ACME: "zerossl", EAB: eabFile}, err: "-acme-eab"},
		{name: "eab unknown issuer", flags: IssuerFlags{ACME: "zerossl", EAB: "letsencrypt=" + eabFile}, err: "want ISSUER=VALUE with ISSUER one of zerossl"},
		{name: "eab env unset", flags: IssuerFlags{ACME: "zerossl", EAB: "zerossl=env:NOPE", Getenv: getenv}, err: "NOPE is empty or not set"},
		{name: "eab bad file", flags: IssuerFlags{ACME: "zerossl", EAB: "zerossl=" + badFile}, err: "holds 1 fields"},
		{name: "eab missing file", flags: IssuerFlags{ACME: "zerossl", EAB: "zerossl=" + filepath.Join(dir, "none")}, err: "no such file"},
		{name: "profile bare", flags: IssuerFlags{ACME: "letsencrypt,zerossl", Profile: "shortlived"},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL, Profile: "shortlived"}, {Name: "zerossl", DirectoryURL: ZeroSSLURL}}},
		{name: "profile per issuer", flags: IssuerFlags{ACME: "letsencrypt,zerossl", Profile: "zerossl=x, letsencrypt=tlsserver"},
			want: []IssuerConfig{{Name: "letsencrypt", DirectoryURL: LetsEncryptURL, Profile: "tlsserver"}, {Name: "zerossl", DirectoryURL: ZeroSSLURL, Profile: "x"}}},
		{name: "profile twice", flags: IssuerFlags{ACME: "letsencrypt", Profile: "a,letsencrypt=b"}, err: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, local, err := ParseIssuers(tt.flags)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v, want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if local != tt.local || !slices.Equal(got, tt.want) {
				t.Errorf("got %+v local %v, want %+v local %v", got, local, tt.want, tt.local)
			}
		})
	}
}

func TestAccountKeyName(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{LetsEncryptURL, "acme_account+key+acme-v02.api.letsencrypt.org-directory"},
		{ZeroSSLURL, "acme_account+key+acme.zerossl.com-v2-dv90"},
		{"https://127.0.0.1:14000/dir", "acme_account+key+127.0.0.1-14000-dir"},
	} {
		if got := accountKeyName(tt.url); got != tt.want {
			t.Errorf("accountKeyName(%s) = %q, want %q", tt.url, got, tt.want)
		}
		if _, _, ok := certCacheKey(accountKeyName(tt.url)); ok {
			t.Errorf("%s reads as a certificate key", accountKeyName(tt.url))
		}
	}
}

func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &orderError{err: &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}}, true},
		{"account", &orderError{err: &accountError{errors.New("registering")}}, true},
		{"5xx", &orderError{err: &acme.Error{StatusCode: 503}}, true},
		{"rate limited", fmt.Errorf("creating order: %w", &acme.Error{StatusCode: 429, ProblemType: "urn:ietf:params:acme:error:rateLimited"}), true},
		{"caa", &acme.AuthorizationError{Errors: []error{&acme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:caa"}}}, true},
		{"unauthorized", &orderError{challenge: "tls-alpn-01", err: &acme.AuthorizationError{Errors: []error{&acme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:unauthorized"}}}}, false},
		{"cancelled", &orderError{err: &url.Error{Err: context.Canceled}}, false},
		{"closed", &orderError{err: ErrClosed}, false},
		{"other", errors.New("certificate from CA: wrong key"), false},
	} {
		if got := unavailable(tt.err); got != tt.want {
			t.Errorf("%s: unavailable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// closedDirectory returns an ACME directory URL on a reserved loopback
// port where nothing listens: a CA that is down.
func closedDirectory(t *testing.T) string {
	t.Helper()
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t))) + "/dir"
}

// issuersManager is a Manager with issuers, a fake clock and Storage in
// cacheDir.
func issuersManager(t *testing.T, cacheDir string, roots *x509.CertPool, clk *fakeClock, issuers []IssuerConfig, hosts ...string) (*Manager, *logBuffer, *eventLog) {
	t.Helper()
	logger, logs := newTestLogger()
	events := &eventLog{}
	m := newTestManager(t, Config{
		CacheDir:    cacheDir,
		Issuers:     issuers,
		RootCAs:     roots,
		Logger:      logger,
		OnACMEEvent: events.add,
		clock:       clk,
		noARI:       true,
	})
	m.SetHosts(hosts)
	return m, logs, events
}

// TestIssuerFallback: the first issuer is down, so the certificate comes
// from the second, which Status, the log, the events and the stored
// schedule name; the renewal starts at the first issuer again.
func TestIssuerFallback(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	down := closedDirectory(t)
	clk := newFakeClock(time.Now().Add(time.Hour))
	cacheDir := t.TempDir()
	m, logs, events := issuersManager(t, cacheDir, p.ServerRoots, clk, []IssuerConfig{
		{Name: "down", DirectoryURL: down},
		{Name: "pebble", DirectoryURL: p.DirectoryURL},
	}, "fb.example.test")
	listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))

	first := served(t, m, "fb.example.test")
	st := statusOfHost(m, "fb.example.test")
	if st.CA != "pebble" || st.Failures != 0 {
		t.Errorf("Status = %+v, want CA pebble and no failure", st)
	}
	if got := logs.count("issuer unavailable; ordering from the next one", "host=fb.example.test", "issuer=down", "next_issuer=pebble"); got != 1 {
		t.Errorf("%d fallback records, want 1; log:\n%s", got, logs)
	}
	if got := logs.count("certificate obtained", "host=fb.example.test", "issuer=pebble", "ca="+p.DirectoryURL); got != 1 {
		t.Errorf("%d \"certificate obtained\" records naming issuer pebble, want 1; log:\n%s", got, logs)
	}
	if got := events.countIssuer(ACMEFailed, "down"); got != 1 {
		t.Errorf("%d failure events for the issuer that is down, want 1", got)
	}
	if got := events.countIssuer(ACMEOrderPlaced, "pebble"); got != 1 {
		t.Errorf("%d orders placed at pebble, want 1", got)
	}
	// One account per issuer: the second's key under its own name.
	if _, err := os.Stat(filepath.Join(cacheDir, accountKeyName(p.DirectoryURL))); err != nil {
		t.Errorf("second issuer's account key: %v", err)
	}
	state, err := os.ReadFile(filepath.Join(cacheDir, "fb.example.test+leproxy-state"))
	if err != nil || !strings.Contains(string(state), `"issuer":"pebble"`) || !strings.Contains(string(state), `"serial":"`+serialOf(first)+`"`) {
		t.Errorf("stored schedule %s (%v), want issuer pebble and the certificate's serial", state, err)
	}

	// The renewal is ordered from the first issuer again (still down),
	// then from the second.
	clk.Set(renewAt(&tls.Certificate{Leaf: first}, time.Time{}).Add(time.Second))
	waitFor(t, "the renewal", func() bool { return !served(t, m, "fb.example.test").Equal(first) })
	if got := events.countIssuer(ACMEFailed, "down"); got != 2 {
		t.Errorf("%d failure events for the issuer that is down after the renewal, want 2 (the renewal tried it first)", got)
	}
	if st := statusOfHost(m, "fb.example.test"); st.CA != "pebble" {
		t.Errorf("Status CA after the renewal = %q, want pebble", st.CA)
	}
}

// TestIssuerFallbackAfterFailures: an issuer that answers but cannot
// validate (its validation port has no listener) is left after
// fallbackAfter failed orders; the next order goes to the second issuer.
func TestIssuerFallbackAfterFailures(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	good := testenv.StartPebble(t, httpPort, tlsPort)
	bad := testenv.StartPebble(t, testenv.FreePort(t), testenv.FreePort(t)) // nothing listens on its ports
	clk := newFakeClock(time.Now().Add(time.Hour))
	// httptest gives both Pebbles the same HTTPS certificate: one pool.
	m, logs, events := issuersManager(t, t.TempDir(), good.ServerRoots, clk, []IssuerConfig{
		{Name: "bad", DirectoryURL: bad.DirectoryURL},
		{Name: "good", DirectoryURL: good.DirectoryURL},
	}, "ff.example.test")
	listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))

	if _, err := m.GetCertificate(ecdsaHello("ff.example.test")); err == nil {
		t.Fatal("order from the issuer that cannot validate succeeded")
	}
	for i := 1; i <= fallbackAfter; i++ {
		st := statusOfHost(m, "ff.example.test")
		if st.Failures != i || !strings.Contains(st.LastError, "tls-alpn-01") || st.CA != "" {
			t.Fatalf("after order %d: Status %+v, want %d failures at tls-alpn-01", i, st, i)
		}
		if got := bad.Orders(); got != i {
			t.Fatalf("after order %d: %d orders at the bad issuer, want %d", i, got, i)
		}
		clk.Set(st.NextAttempt)
		if i < fallbackAfter {
			waitFor(t, "the retry", func() bool { return statusOfHost(m, "ff.example.test").Failures == i+1 })
		}
	}
	waitFor(t, "the certificate from the second issuer", func() bool { return statusOfHost(m, "ff.example.test").CA == "good" })
	if got := bad.Orders(); got != fallbackAfter {
		t.Errorf("%d orders at the bad issuer, want %d", got, fallbackAfter)
	}
	if got := good.Orders(); got != 1 {
		t.Errorf("%d orders at the good issuer, want 1", got)
	}
	if got := logs.count("issuer keeps failing; the next orders go to the next issuer", "issuer=bad", "next_issuer=good"); got != 1 {
		t.Errorf("%d fallback records, want 1; log:\n%s", got, logs)
	}
	if got := events.countIssuer(ACMEFailed, "bad"); got != fallbackAfter {
		t.Errorf("%d failure events for bad, want %d", got, fallbackAfter)
	}
}

// countIssuer counts the events of kind at the issuer named issuer.
func (l *eventLog) countIssuer(kind, issuer string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == kind && e.Issuer == issuer {
			n++
		}
	}
	return n
}
