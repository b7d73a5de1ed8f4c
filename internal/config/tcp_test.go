package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

func TestCanonicalProtocol(t *testing.T) {
	for _, p := range dbproxy.Protocols() {
		for _, spelling := range []string{p, strings.ToUpper(p)} {
			if got, ok := canonicalProtocol(spelling); !ok || got != p {
				t.Errorf("canonicalProtocol(%q) = %q, %t; want %q, true", spelling, got, ok, p)
			}
		}
	}
	for alias, p := range dbproxy.Aliases() {
		if got, ok := canonicalProtocol(alias); !ok || got != p {
			t.Errorf("canonicalProtocol(%q) = %q, %t; want %q, true", alias, got, ok, p)
		}
	}
	for _, bad := range []string{"", "postgress", "http", "pg"} {
		if got, ok := canonicalProtocol(bad); ok {
			t.Errorf("canonicalProtocol(%q) = %q, true; want false", bad, got)
		}
	}
}

// writePEM writes PEM blocks to a new file in dir.
func writePEM(t *testing.T, dir, name string, blocks ...*pem.Block) string {
	t.Helper()
	var data []byte
	for _, b := range blocks {
		data = append(data, pem.EncodeToMemory(b)...)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newCert returns a self-signed CA certificate block and its key block.
func newCert(t *testing.T, cn string) (cert, key *pem.Block) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "CERTIFICATE", Bytes: der}, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}
}

func TestCheckCAFile(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := newCert(t, "one")
	c2, _ := newCert(t, "two")
	ok := map[string]string{
		"one certificate": writePEM(t, dir, "one.pem", c1),
		"bundle":          writePEM(t, dir, "bundle.pem", c1, c2),
		"with a key":      writePEM(t, dir, "withkey.pem", k1, c1),
	}
	for name, path := range ok {
		if pool, err := loadCAFile(path); err != nil || pool == nil {
			t.Errorf("%s: loadCAFile: %v", name, err)
		}
	}
	bad := []struct{ name, path, err string }{
		{"key only", writePEM(t, dir, "key.pem", k1), "no PEM certificate"},
		{"empty", writePEM(t, dir, "empty.pem"), "no PEM certificate"},
		{"garbage certificate", writePEM(t, dir, "bad.pem", c1, &pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), "certificate 2 in"},
		{"missing", filepath.Join(dir, "missing.pem"), "does not exist"},
		{"directory", dir, "is not a regular file"},
		{"relative", "ca.pem", "relative path"},
		{"device", os.DevNull, "is not a regular file"},
	}
	for _, tt := range bad {
		if _, err := loadCAFile(tt.path); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: loadCAFile(%s): got %v, want an error containing %q", tt.name, tt.path, err, tt.err)
		}
	}
}

func TestListenConflicts(t *testing.T) {
	tests := []struct {
		a, b     string
		conflict bool
	}{
		{":5432", ":5432", true},
		{":5432", "0.0.0.0:5432", true},
		{"[::]:5432", "127.0.0.1:5432", true},
		{"127.0.0.1:5432", "127.0.0.1:05432", true},
		{"127.0.0.1:5432", "[::ffff:127.0.0.1]:5432", true},
		{"LOCALHOST:5432", "localhost:5432", true},
		{"127.0.0.1:5432", "127.0.0.2:5432", false},
		{":5432", ":5433", false},
		{"localhost:5432", "127.0.0.1:5432", false}, // names are not resolved
	}
	for _, tt := range tests {
		input := fmt.Sprintf("tcp:\n- listen: %q\n  protocol: tls\n  routes: {a.example.com: 127.0.0.1:1}\n- listen: %q\n  protocol: tls\n  routes: {b.example.com: 127.0.0.1:1}\n", tt.a, tt.b)
		_, err := Parse("m.yml", []byte(input))
		got := err != nil && strings.Contains(err.Error(), "conflicts with")
		if got != tt.conflict {
			t.Errorf("%q and %q: got conflict %t (%v), want %t", tt.a, tt.b, got, err, tt.conflict)
		}
	}
}

// TestListenerOptions: a protocol's own listener keys (FTP's) reach
// Listener.Options as written, checked by the protocol.
func TestListenerOptions(t *testing.T) {
	cfg, err := Parse("m.yml", []byte(`
tcp:
- listen: ":21"
  protocol: FTP
  passive_ports: 40000-40009
  passive_address: 203.0.113.7
  routes: {ftp.example.com: 10.0.0.1:21}
- listen: ":990"
  protocol: ftps
  routes: {ftp.example.com: 10.0.0.1:21}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"passive_ports": "40000-40009", "passive_address": "203.0.113.7"}
	if got := cfg.TCP[0].Options; !maps.Equal(got, want) {
		t.Errorf("options: got %v, want %v", got, want)
	}
	if got := cfg.TCP[1].Options; got != nil {
		t.Errorf("options of a listener without any: got %v, want nil", got)
	}
}
