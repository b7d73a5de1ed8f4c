package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/leproxy/leproxy/internal/testenv"
)

// servedSerial returns the serial number of the certificate leproxy serves
// at addr for name.
func servedSerial(t *testing.T, addr, name string, p *testenv.Pebble) string {
	t.Helper()
	d := &net.Dialer{Timeout: 30 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: p.IssuerRoots(t)})
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestBackupRestoreKeepsCertificates backs the cache up, wipes it, restores
// it, and checks that leproxy serves the same certificate with no new order.
func TestBackupRestoreKeepsCertificates(t *testing.T) {
	addr := addrFor(t)
	_, port, _ := net.SplitHostPort(addr)
	p := testenv.StartPebble(t, testenv.FreePort(t), atoi(t, port))
	cache := filepath.Join(t.TempDir(), "cache")
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.test: "+backend(t, "a")+"\n")
	args := []string{"-map", mapping, "-cache", cache, "-addr", addr, "-http", "", "-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile}

	d := startDaemon(t, addr, args...)
	before := servedSerial(t, addr, "a.test", p)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	orders := p.Orders()

	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "correct horse battery staple")
	archive := filepath.Join(t.TempDir(), "cache.lpb")
	ctx := context.Background()
	if err := runIO(ctx, []string{"-cache", cache, "-backup", archive}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-backup: %v", err)
	}
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}

	// A wrong passphrase restores nothing.
	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "wrong")
	err := runIO(ctx, []string{"-cache", cache, "-restore", archive}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("-restore with a wrong passphrase: got %v", err)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("a refused restore created the cache: %v", err)
	}

	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "correct horse battery staple")
	if err := runIO(ctx, []string{"-cache", cache, "-restore", archive}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-restore: %v", err)
	}
	startDaemon(t, addr, args...)
	if after := servedSerial(t, addr, "a.test", p); after != before {
		t.Errorf("after restore leproxy serves serial %s, want the backed-up %s", after, before)
	}
	if got := p.Orders(); got != orders {
		t.Errorf("after restore Pebble orders went from %d to %d, want no new order", orders, got)
	}
}

// TestBackupToRecipient makes a backup with only an age public key and no
// passphrase (as a server would), and restores it with the identity file;
// the passphrase file route works as well.
func TestBackupToRecipient(t *testing.T) {
	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	identityFile := writeFile(t, dir, "key.txt", id.String()+"\n")
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cache, "local-ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cache, "acme_account+key", "account key")
	ctx := context.Background()
	archive := filepath.Join(dir, "cache.age")

	err = runIO(ctx, []string{"-cache", cache, "-backup", archive}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-backup-recipient") {
		t.Fatalf("-backup with no key: got %v, want an error naming the ways to give one", err)
	}
	if err := runIO(ctx, []string{"-cache", cache, "-backup", archive, "-backup-recipient", id.Recipient().String()}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-backup -backup-recipient: %v", err)
	}
	restored := filepath.Join(dir, "restored")
	passFile := writeFile(t, dir, "pass", "not the key\n")
	err = runIO(ctx, []string{"-cache", restored, "-restore", archive, "-backup-passphrase-file", passFile}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("-restore of a recipient backup with a passphrase: got %v", err)
	}
	if err := runIO(ctx, []string{"-cache", restored, "-restore", archive, "-restore-identity", identityFile}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-restore -restore-identity: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(restored, "acme_account+key")); err != nil || string(b) != "account key" {
		t.Errorf("restored account key: %q, %v", b, err)
	}

	// The passphrase from a file, both ways.
	if err := runIO(ctx, []string{"-cache", cache, "-backup", archive, "-backup-passphrase-file", passFile}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-backup -backup-passphrase-file: %v", err)
	}
	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "not the key")
	if err := runIO(ctx, []string{"-cache", filepath.Join(dir, "again"), "-restore", archive}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-restore with the same passphrase from the environment: %v", err)
	}
}
