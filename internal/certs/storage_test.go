package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

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

func TestDirStorage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	s := NewDirStorage(dir)
	ctx := context.Background()

	if _, err := s.Get(ctx, "www.example.com"); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound (fs.ErrNotExist)", err)
	}
	if keys, err := s.List(ctx, ""); err != nil || len(keys) != 0 {
		t.Errorf("List of a missing directory = %q, %v; want nothing", keys, err)
	}
	for key, data := range map[string]string{
		"www.example.com":     "ecdsa",
		"www.example.com+rsa": "rsa",
		"acme_account+key":    "account",
		"local-ca/root.pem":   "root",
	} {
		if err := s.Put(ctx, key, []byte(data)); err != nil {
			t.Fatalf("Put(%q): %v", key, err)
		}
		// autocert.DirCache's layout: the file named key, mode 0600.
		p := filepath.Join(dir, filepath.FromSlash(key))
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("Put(%q) wrote no file %s: %v", key, p, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
		if got, err := s.Get(ctx, key); err != nil || string(got) != data {
			t.Errorf("Get(%q) = %q, %v; want %q", key, got, err, data)
		}
		if !slices.Contains([]string{"local-ca/root.pem"}, key) {
			got, err := autocert.DirCache(dir).Get(ctx, key)
			if err != nil || string(got) != data {
				t.Errorf("autocert.DirCache reads %q as %q, %v; want %q", key, got, err, data)
			}
		}
	}
	// A value written by autocert is read as it is.
	if err := autocert.DirCache(dir).Put(ctx, "old.example.com", []byte("by autocert")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "old.example.com"); err != nil || string(got) != "by autocert" {
		t.Errorf("Get of autocert's value = %q, %v", got, err)
	}
	if err := s.Put(ctx, "www.example.com", []byte("ecdsa 2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "www.example.com"); string(got) != "ecdsa 2" {
		t.Errorf("Get after a second Put = %q, want the new value", got)
	}

	if err := s.Lock(ctx, "issue/www.example.com"); err != nil {
		t.Fatal(err)
	}
	keys, err := s.List(ctx, "")
	want := []string{"acme_account+key", "local-ca/root.pem", "old.example.com", "www.example.com", "www.example.com+rsa"}
	if err != nil || !slices.Equal(keys, want) {
		t.Errorf("List(\"\") = %q, %v; want %q (no lock or temporary files)", keys, err, want)
	}
	if keys, err := s.List(ctx, "www."); err != nil || !slices.Equal(keys, want[3:]) {
		t.Errorf("List(\"www.\") = %q, %v; want %q", keys, err, want[3:])
	}
	if err := s.Unlock(ctx, "issue/www.example.com"); err != nil {
		t.Fatal(err)
	}

	if err := s.Delete(ctx, "www.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "www.example.com"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get after Delete: %v, want fs.ErrNotExist", err)
	}
	if err := s.Delete(ctx, "www.example.com"); err != nil {
		t.Errorf("Delete of a missing key: %v, want nil", err)
	}

	for _, bad := range []string{"", "/", ".hidden", "a/../.x", "nul\x00"} {
		if err := s.Put(ctx, bad, nil); err == nil {
			t.Errorf("Put(%q) succeeded, want an invalid key error", bad)
		}
	}
	// A key cannot leave the directory.
	if err := s.Put(ctx, "../escape", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err != nil {
		t.Errorf("../escape not kept inside the directory: %v", err)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Get(cancelled, "acme_account+key"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Put(cancelled, "x", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestDirStorageLock(t *testing.T) {
	dir := t.TempDir()
	a, b := NewDirStorage(dir), NewDirStorage(dir) // as two processes would
	ctx := context.Background()
	if err := a.Lock(ctx, "issue/x"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "issue/x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second storage's Lock of a held lock: %v, want it to wait until its deadline", err)
	}
	if err := a.Lock(short, "issue/x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("same storage's Lock of a held lock: %v, want it to wait until its deadline", err)
	}
	if err := b.Lock(ctx, "issue/y"); err != nil {
		t.Fatalf("another lock: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue/x") }()
	if err := a.Unlock(ctx, "issue/x"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Lock after Unlock: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Lock not granted after Unlock")
	}
	if err := a.Unlock(ctx, "issue/x"); err == nil {
		t.Error("Unlock of a lock not held succeeded")
	}
	if err := b.Unlock(ctx, "issue/x"); err != nil {
		t.Error(err)
	}
	if err := b.Unlock(ctx, "issue/y"); err != nil {
		t.Error(err)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	src := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	src.SetHosts([]string{"www.example.com"})
	c, err := src.GetCertificate(ecdsaHello("www.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	root := readCert(t, src.LocalRootPath())
	c.Certificate = append(c.Certificate, root.Raw)
	data, err := encodeEntry(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, autocertEntry(t, c)) {
		t.Error("encodeEntry differs from autocert's encoding")
	}
	k := certKey{host: "www.example.com"}
	got, err := decodeEntry(data, k, time.Now())
	if err != nil {
		t.Fatalf("decodeEntry: %v", err)
	}
	if !got.Leaf.Equal(c.Leaf) || len(got.Certificate) != 2 {
		t.Errorf("decodeEntry returned another certificate or chain")
	}
	bad := []struct {
		name string
		k    certKey
		now  time.Time
		data []byte
	}{
		{name: "other host", k: certKey{host: "other.example.com"}, now: time.Now(), data: data},
		{name: "rsa key", k: certKey{host: "www.example.com", rsa: true}, now: time.Now(), data: data},
		{name: "expired", k: k, now: c.Leaf.NotAfter, data: data},
		{name: "not yet valid", k: k, now: c.Leaf.NotBefore.Add(-time.Second), data: data},
		{name: "no key", k: k, now: time.Now(), data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw})},
		{name: "trailing garbage", k: k, now: time.Now(), data: append(bytes.Clone(data), "garbage"...)},
		{name: "empty", k: k, now: time.Now()},
	}
	for _, tt := range bad {
		if _, err := decodeEntry(tt.data, tt.k, tt.now); err == nil {
			t.Errorf("decodeEntry (%s) succeeded, want an error", tt.name)
		}
	}
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

func pemDecode(data []byte) []byte {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil
	}
	return b.Bytes
}
