package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/leproxy/leproxy/internal/testenv"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// TestAutocertCacheLoadsUnchanged: a cache directory written by
// autocert.Manager (what leproxy used before) is served as it is: the same
// ECDSA and RSA certificates, no new order, the same ACME account.
func TestAutocertCacheLoadsUnchanged(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	dir := t.TempDir()
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	roots := p.IssuerRoots(t)

	// The old code: autocert.Manager on a DirCache, obtaining by tls-alpn-01.
	old := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(dir),
		HostPolicy: autocert.HostWhitelist("old.example.test"),
		Email:      "admin@example.com",
		Client: &acme.Client{
			DirectoryURL: p.DirectoryURL,
			HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerRoots}}},
		},
	}
	ln, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln, old.TLSConfig())
	oldECDSA, err := handshake(tlsAddr, &tls.Config{ServerName: "old.example.test", RootCAs: roots})
	if err != nil {
		t.Fatalf("autocert, ECDSA client: %v", err)
	}
	oldRSA, err := handshake(tlsAddr, &tls.Config{
		ServerName: "old.example.test", RootCAs: roots, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
	})
	if err != nil {
		t.Fatalf("autocert, RSA-only client: %v", err)
	}
	if oldRSA.PeerCertificates[0].PublicKeyAlgorithm != x509.RSA {
		t.Fatal("autocert served no RSA certificate to an RSA-only client")
	}
	ln.Close()
	for _, name := range []string{"old.example.test", "old.example.test+rsa", "acme_account+key"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("autocert did not write %s: %v", name, err)
		}
	}
	accountKey, err := os.ReadFile(filepath.Join(dir, "acme_account+key"))
	if err != nil {
		t.Fatal(err)
	}
	orders := p.Orders()

	// The new Manager on the same directory, with a second issuer (down):
	// the first keeps autocert's account.
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{
		CacheDir: dir,
		Issuers:  []IssuerConfig{{Name: "pebble", DirectoryURL: p.DirectoryURL}, {Name: "second", DirectoryURL: closedDirectory(t)}},
		RootCAs:  p.ServerRoots,
		Email:    "admin@example.com",
		Logger:   logger,
	})
	m.SetHosts([]string{"old.example.test", "new.example.test"})
	if st := statusOfHost(m, "old.example.test"); !st.NotAfter.Equal(oldECDSA.PeerCertificates[0].NotAfter) || st.CA != "" {
		t.Errorf("Status before any handshake = %+v, want the cached certificate's expiry and no CA (autocert kept none)", st)
	}
	c, err := m.GetCertificate(ecdsaHello("old.example.test"))
	if err != nil {
		t.Fatalf("ECDSA certificate from autocert's cache: %v", err)
	}
	if !c.Leaf.Equal(oldECDSA.PeerCertificates[0]) {
		t.Error("the new Manager served another ECDSA certificate than autocert's")
	}
	if err := verifyChain(c.Certificate, "old.example.test", roots); err != nil {
		t.Errorf("chain from autocert's cache: %v", err)
	}
	rsaHello := &tls.ClientHelloInfo{ServerName: "old.example.test", CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}
	c, err = m.GetCertificate(rsaHello)
	if err != nil {
		t.Fatalf("RSA certificate from autocert's cache: %v", err)
	}
	if !c.Leaf.Equal(oldRSA.PeerCertificates[0]) {
		t.Error("the new Manager served another RSA certificate than autocert's")
	}
	if got := p.Orders(); got != orders {
		t.Errorf("%d new orders for names in autocert's cache, want 0", got-orders)
	}
	if got := logs.count("certificate obtained"); got != 0 {
		t.Errorf("%d certificates obtained, want 0; log:\n%s", got, logs)
	}

	// A new name is ordered with autocert's account.
	listenTLS(t, tlsAddr, m.TLSConfig("http/1.1"))
	if _, err := handshake(tlsAddr, &tls.Config{ServerName: "new.example.test", RootCAs: roots}); err != nil {
		t.Fatalf("new name: %v", err)
	}
	if got := p.Orders(); got != orders+1 {
		t.Errorf("%d orders for a new name, want 1", got-orders)
	}
	after, err := os.ReadFile(filepath.Join(dir, "acme_account+key"))
	if err != nil || !bytes.Equal(after, accountKey) {
		t.Errorf("account key changed: %v", err)
	}
	key, err := parsePrivateKey(mustPEMBlock(t, accountKey))
	if err != nil {
		t.Fatal(err)
	}
	if st := statusOfHost(m, "new.example.test"); st.CA != "pebble" {
		t.Errorf("Status of the new name: CA %q, want pebble", st.CA)
	}
	if keys, err := NewDirStorage(dir).List(t.Context(), acmeAccountKey+"+"); err != nil || len(keys) != 0 {
		t.Errorf("account keys besides autocert's: %q (%v), want none", keys, err)
	}
	if client := m.issuers[0].client; client == nil || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(client.Key.Public()) {
		t.Error("the new Manager orders with another account key than autocert's")
	}
}

// mustPEMBlock returns the bytes of the first PEM block of data.
func mustPEMBlock(t *testing.T, data []byte) []byte {
	t.Helper()
	b := pemDecode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b
}
