package certs

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

// pebbleEABKey is a base64url HMAC key for Pebble's EAB tests.
const pebbleEABKey = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

// TestEABPerIssuer: against a CA that requires External Account Binding,
// the key ID and HMAC key read from the issuer's -acme-eab file create the
// account and a certificate is issued; a wrong HMAC key is a clear error
// naming the issuer and the key ID, and no order is placed.
func TestEABPerIssuer(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort, testenv.WithPebbleEAB(map[string]string{"kid-1": pebbleEABKey}))
	dir := t.TempDir()
	good := filepath.Join(dir, "good.eab")
	bad := filepath.Join(dir, "bad.eab")
	if err := os.WriteFile(good, []byte("kid-1 "+pebbleEABKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("kid-1\n"+strings.Repeat("A", len(pebbleEABKey))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))

	newManager := func(eabFile string) (*Manager, *logBuffer) {
		issuers, _, err := ParseIssuers(IssuerFlags{ACME: p.DirectoryURL, EAB: "1=" + eabFile})
		if err != nil {
			t.Fatal(err)
		}
		logger, logs := newTestLogger()
		m := newTestManager(t, Config{CacheDir: t.TempDir(), Issuers: issuers, RootCAs: p.ServerRoots, Logger: logger, noARI: true})
		m.SetHosts([]string{"eab.example.test"})
		return m, logs
	}

	m, logs := newManager(bad)
	_, err := m.GetCertificate(ecdsaHello("eab.example.test"))
	if err == nil {
		t.Fatal("certificate issued with a wrong EAB key")
	}
	for _, want := range []string{"registering ACME account with " + p.DirectoryURL, `External Account Binding key ID "kid-1"`, "unauthorized"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if st := statusOfHost(m, "eab.example.test"); st.Failures != 1 || !strings.Contains(st.LastError, `key ID "kid-1"`) {
		t.Errorf("Status = %+v, want the EAB failure", st)
	}
	if got := p.Orders(); got != 0 {
		t.Errorf("%d orders without an account, want 0", got)
	}
	if strings.Contains(logs.String(), pebbleEABKey) {
		t.Error("the HMAC key is in the log")
	}
	m.Close()

	m, _ = newManager(good)
	listenTLS(t, tlsAddr, m.TLSConfig("http/1.1"))
	if _, err := handshake(tlsAddr, &tls.Config{ServerName: "eab.example.test", RootCAs: p.IssuerRoots(t)}); err != nil {
		t.Fatalf("handshake with a certificate issued through EAB: %v", err)
	}
	if got := p.Orders(); got != 1 {
		t.Errorf("%d orders, want 1", got)
	}
}

// TestProfileShortlived: an issuer's ACME profile goes into its orders
// (Pebble's "shortlived" issues for 160 hours, its "default" for 90 days),
// and a profile the directory does not list fails New, naming the
// listed ones.
func TestProfileShortlived(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort, testenv.WithPebbleProfiles(map[string]time.Duration{
		"default":    90 * 24 * time.Hour,
		"shortlived": 160 * time.Hour,
	}))
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	for _, tt := range []struct {
		profile string
		life    time.Duration
	}{
		{"shortlived", 160 * time.Hour},
		{"default", 90 * 24 * time.Hour},
	} {
		t.Run(tt.profile, func(t *testing.T) {
			logger, logs := newTestLogger()
			m := newTestManager(t, Config{
				CacheDir: t.TempDir(),
				Issuers:  []IssuerConfig{{Name: "pebble", DirectoryURL: p.DirectoryURL, Profile: tt.profile}},
				RootCAs:  p.ServerRoots, Logger: logger, noARI: true,
			})
			m.SetHosts([]string{tt.profile + ".example.test"})
			ln, err := net.Listen("tcp", tlsAddr)
			if err != nil {
				t.Fatal(err)
			}
			serveTLS(t, ln, m.TLSConfig("http/1.1"))
			leaf := served(t, m, tt.profile+".example.test")
			ln.Close()
			// Pebble's NotAfter is NotBefore + validity − 1 s.
			if got := leaf.NotAfter.Sub(leaf.NotBefore) + time.Second; got != tt.life {
				t.Errorf("lifetime %v, want %v (profile %s)", got, tt.life, tt.profile)
			}
			if got := logs.count("certificate obtained", "profile="+tt.profile); got != 1 {
				t.Errorf("%d \"certificate obtained\" records with profile=%s, want 1; log:\n%s", got, tt.profile, logs)
			}
		})
	}

	_, err := New(Config{
		CacheDir: t.TempDir(),
		Issuers:  []IssuerConfig{{Name: "pebble", DirectoryURL: p.DirectoryURL, Profile: "tlsserver"}},
		RootCAs:  p.ServerRoots,
	})
	if err == nil || !strings.Contains(err.Error(), `issuer pebble does not offer ACME profile "tlsserver"; it lists default, shortlived`) {
		t.Errorf("New with a profile Pebble does not list: %v, want an error naming the listed ones", err)
	}
	// A directory that cannot be read at start is not an error: the CA
	// may be down; each order checks the profile again.
	m, err := New(Config{CacheDir: t.TempDir(), Issuers: []IssuerConfig{{DirectoryURL: closedDirectory(t), Profile: "shortlived"}}})
	if err != nil {
		t.Errorf("New with a profile at a CA that is down: %v", err)
	} else {
		m.Close()
	}
}
