package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/acme/autocert"
)

// autocertEntry encodes c as autocert's cache stores it: the key, then the
// chain.
func autocertEntry(t *testing.T, c *tls.Certificate) []byte {
	t.Helper()
	var buf bytes.Buffer
	der, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pem.Encode(&buf, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	for _, b := range c.Certificate {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: b})
	}
	return buf.Bytes()
}

func TestCertCacheKey(t *testing.T) {
	tests := []struct {
		key      string
		wantHost string
		wantRSA  bool
		wantOK   bool
	}{
		{key: "www.example.com", wantHost: "www.example.com", wantOK: true},
		{key: "www.example.com+rsa", wantHost: "www.example.com", wantRSA: true, wantOK: true},
		{key: "www.example.com+token"},
		{key: "abcDEF_123+http-01"},
		{key: "acme_account+key"},
		{key: "acme_account.key"},
		{key: "+rsa"},
		{key: ""},
	}
	for _, tt := range tests {
		host, rsa, ok := certCacheKey(tt.key)
		if host != tt.wantHost || rsa != tt.wantRSA || ok != tt.wantOK {
			t.Errorf("certCacheKey(%q) = %q, %v, %v; want %q, %v, %v", tt.key, host, rsa, ok, tt.wantHost, tt.wantRSA, tt.wantOK)
		}
	}
}

type storedCall struct {
	host    string
	rsa     bool
	serial  string
	err     error
	renewed bool
}

func TestObservedCache(t *testing.T) {
	dir := t.TempDir()
	var calls []storedCall
	c := &observedCache{
		dir: autocert.DirCache(dir),
		stored: func(host string, rsa bool, leaf *x509.Certificate, err error, renewed bool) {
			call := storedCall{host: host, rsa: rsa, err: err, renewed: renewed}
			if leaf != nil {
				call.serial = leaf.SerialNumber.String()
			}
			calls = append(calls, call)
		},
		storeFailed: func(host string, err error) { t.Errorf("storeFailed(%q, %v)", host, err) },
	}
	ctx := context.Background()

	src := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	src.SetHosts([]string{"www.example.com"})
	cert1, err := src.GetCertificate(ecdsaHello("www.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	src.ca.leaves = map[string]*tls.Certificate{} // force a second leaf
	cert2, err := src.GetCertificate(ecdsaHello("www.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	entry1, entry2 := autocertEntry(t, cert1), autocertEntry(t, cert2)

	puts := []struct {
		key  string
		data []byte
		want *storedCall
	}{
		{key: "acme_account+key", data: []byte("key"), want: nil},
		{key: "www.example.com+token", data: entry1, want: nil},
		{key: "tok+http-01", data: []byte("tok.thumb"), want: nil},
		{key: "www.example.com", data: entry1, want: &storedCall{host: "www.example.com", serial: cert1.Leaf.SerialNumber.String()}},
		{key: "www.example.com", data: entry2, want: &storedCall{host: "www.example.com", serial: cert2.Leaf.SerialNumber.String(), renewed: true}},
		{key: "www.example.com+rsa", data: entry1, want: &storedCall{host: "www.example.com", rsa: true, serial: cert1.Leaf.SerialNumber.String()}},
	}
	for _, p := range puts {
		calls = nil
		if err := c.Put(ctx, p.key, p.data); err != nil {
			t.Fatalf("Put(%q): %v", p.key, err)
		}
		switch {
		case p.want == nil && len(calls) != 0:
			t.Errorf("Put(%q) reported %+v, want nothing", p.key, calls)
		case p.want != nil && (len(calls) != 1 || calls[0] != *p.want):
			t.Errorf("Put(%q) reported %+v, want %+v", p.key, calls, *p.want)
		}
		// The entry is stored verbatim under its key (autocert's format).
		onDisk, err := os.ReadFile(filepath.Join(dir, p.key))
		if err != nil || !bytes.Equal(onDisk, p.data) {
			t.Errorf("file %s: %q, %v; want the data put", p.key, onDisk, err)
		}
		got, err := c.Get(ctx, p.key)
		if err != nil || !bytes.Equal(got, p.data) {
			t.Errorf("Get(%q) = %q, %v; want the data put", p.key, got, err)
		}
	}

	calls = nil
	if err := c.Put(ctx, "bad.example.com", []byte("no pem here")); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0].err == nil {
		t.Errorf("Put of an unparsable entry reported %+v, want one call with an error", calls)
	}

	if err := c.Delete(ctx, "www.example.com"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := c.Get(ctx, "www.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("Get after Delete: %v, want ErrCacheMiss", err)
	}
	if leaf := c.leaf(ctx, "www.example.com+rsa"); leaf == nil || !leaf.Equal(cert1.Leaf) {
		t.Errorf("leaf(+rsa) = %v, want the stored certificate", leaf)
	}
}

func TestObservedCacheStoreFailed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var failed []string
	c := &observedCache{
		dir:         autocert.DirCache(filepath.Join(file, "cache")),
		stored:      func(string, bool, *x509.Certificate, error, bool) { t.Error("stored called for a failed write") },
		storeFailed: func(host string, err error) { failed = append(failed, host) },
	}
	if err := c.Put(context.Background(), "www.example.com", []byte("x")); err == nil {
		t.Fatal("Put into an impossible directory succeeded")
	}
	if len(failed) != 1 || failed[0] != "www.example.com" {
		t.Errorf("storeFailed calls %q, want [www.example.com]", failed)
	}
}

func TestParseLeafPEM(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"a.localhost"})
	c, err := m.GetCertificate(ecdsaHello("a.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	root := readCert(t, m.LocalRootPath())
	c.Certificate = append(c.Certificate, root.Raw) // a chain: leaf first
	leaf, err := parseLeafPEM(autocertEntry(t, c))
	if err != nil || !leaf.Equal(c.Leaf) {
		t.Errorf("parseLeafPEM = %v, %v; want the leaf", leaf, err)
	}
	for _, bad := range []string{"", "garbage", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"} {
		if _, err := parseLeafPEM([]byte(bad)); err == nil {
			t.Errorf("parseLeafPEM(%q) succeeded, want an error", bad)
		}
	}
}
