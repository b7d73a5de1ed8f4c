package certs

import (
	"crypto/tls"
	"testing"

	"github.com/leproxy/leproxy/internal/tlspolicy"
)

// TestTLSConfigPolicy checks that both listener configurations have the TLS
// policy: CBC-only TLS 1.2 clients are refused, AEAD TLS 1.2 and TLS 1.3
// clients connect, and no session is resumed unless tickets were turned
// on, when a ticket resumes it.
func TestTLSConfigPolicy(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"app.localhost"})
	roots := readRoots(t, m.LocalRootPath())
	for name, cfg := range map[string]*tls.Config{
		"TLSConfig":            m.TLSConfig("h2", "http/1.1"),
		"TLSConfigWithDefault": m.TLSConfigWithDefault("app.localhost"),
	} {
		t.Run(name, func(t *testing.T) {
			addr := listenTLS(t, "127.0.0.1:0", cfg)
			client := func(minV, maxV uint16, suites ...uint16) *tls.Config {
				return &tls.Config{ServerName: "app.localhost", RootCAs: roots, MinVersion: minV, MaxVersion: maxV, CipherSuites: suites}
			}
			for _, suite := range []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
			} {
				if cs, err := handshake(addr, client(tls.VersionTLS12, tls.VersionTLS12, suite)); err == nil {
					t.Errorf("client offering only %s: connected with %s, want refused", tls.CipherSuiteName(suite), tls.CipherSuiteName(cs.CipherSuite))
				}
			}
			if cs, err := handshake(addr, client(tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)); err != nil {
				t.Errorf("TLS 1.2 AEAD client: %v", err)
			} else if cs.Version != tls.VersionTLS12 {
				t.Errorf("TLS 1.2 AEAD client: version %x", cs.Version)
			}
			if cs, err := handshake(addr, client(tls.VersionTLS13, tls.VersionTLS13)); err != nil {
				t.Errorf("TLS 1.3 client: %v", err)
			} else if cs.Version != tls.VersionTLS13 {
				t.Errorf("TLS 1.3 client: version %x", cs.Version)
			}
			// TLS 1.2: its ticket comes within the handshake (a TLS 1.3
			// one only after, to a client that reads).
			resume := client(tls.VersionTLS12, tls.VersionTLS12)
			resume.ClientSessionCache = tls.NewLRUClientSessionCache(2)
			for i := range 2 {
				cs, err := handshake(addr, resume)
				if err != nil {
					t.Fatalf("resumption handshake %d: %v", i, err)
				}
				if cs.DidResume {
					t.Errorf("handshake %d resumed, want tickets off by default", i)
				}
			}
		})
	}
}

// TestTLSConfigSessionTickets checks that configurations made after
// tlspolicy.SetSessionTickets(true) resume sessions.
func TestTLSConfigSessionTickets(t *testing.T) {
	tlspolicy.SetSessionTickets(true)
	t.Cleanup(func() { tlspolicy.SetSessionTickets(false) })
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"app.localhost"})
	roots := readRoots(t, m.LocalRootPath())
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("h2", "http/1.1"))
	resume := &tls.Config{ServerName: "app.localhost", RootCAs: roots, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(2)}
	for i, want := range []bool{false, true} {
		cs, err := handshake(addr, resume)
		if err != nil {
			t.Fatalf("resumption handshake %d: %v", i, err)
		}
		if cs.DidResume != want {
			t.Errorf("handshake %d: DidResume = %v, want %v", i, cs.DidResume, want)
		}
	}
}
