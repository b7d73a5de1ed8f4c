package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/leproxy/leproxy/internal/testenv"
)

// TestDNS01Wildcards runs leproxy with wildcard hosts whose certificates
// come by dns-01 from Pebble validating against a real BIND: one through
// RFC 2136 updates signed with TSIG (an HTTPS host and a tcp route), then,
// added by a reload, one through an exec hook that writes into the same
// BIND with nsupdate. Each wildcard serves the names one label under it,
// and no challenge record is left behind.
func TestDNS01Wildcards(t *testing.T) {
	key := testenv.NewTSIGKey(t, "leproxy.")
	b := testenv.StartBIND(t, "example.test", key)
	p := testenv.StartPebble(t, testenv.FreePort(t), testenv.FreePort(t), testenv.WithPebbleDNS(b.Addr))
	nsupdate := testenv.LookBinary(t, "nsupdate", "bind9-dnsutils")
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "tsig.key", fmt.Sprintf("key %q {\n\talgorithm %s;\n\tsecret %q;\n};\n", key.Name, key.Algorithm, key.Secret))
	host, port, _ := strings.Cut(b.Addr, ":")
	hook := filepath.Join(dir, "dns-hook")
	err := os.WriteFile(hook, fmt.Appendf(nil, `#!/bin/sh
set -e
case "$1" in present) op=add ;; cleanup) op=delete ;; *) exit 2 ;; esac
printf 'server %s %s\nzone example.test\nupdate %%s %%s 60 TXT "%%s"\nsend\n' "$op" "$2" "$3" | %s -k %s
`, host, port, nsupdate, keyFile), 0o700)
	if err != nil {
		t.Fatal(err)
	}

	addr, tcpAddr := addrFor(t), addrFor(t)
	base := fmt.Sprintf(`"*.example.test": %s
tcp:
  - listen: %q
    protocol: tls
    routes:
      "*.db.example.test": %s
certificates:
  - names: ["*.example.test", "*.db.example.test"]
    challenge: dns-01
    dns:
      rfc2136:
        server: %q
        zone: example.test
        tsig_key: leproxy
        tsig_secret_file: %s
`, backend(t, "web"), tcpAddr, backend(t, "db"), b.Addr, keyFile)
	mapFile := writeFile(t, dir, "mapping.yml", base)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile)
	roots := p.IssuerRoots(t)

	check := func(addr, name, wantBody, wantCert string) {
		t.Helper()
		resp, body := get(t, clientFor(addr, roots), "https://"+name+"/")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, wantBody+" host="+name) {
			t.Fatalf("https://%s/: got %d %q, want 200 from %s", name, resp.StatusCode, body, wantBody)
		}
		if got := resp.TLS.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{wantCert}) {
			t.Errorf("https://%s/: certificate for %v, want [%s]", name, got, wantCert)
		}
	}
	check(addr, "a.example.test", "web", "*.example.test")
	check(addr, "b.example.test", "web", "*.example.test")
	check(tcpAddr, "q.db.example.test", "db", "*.db.example.test")
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "x.a.example.test", RootCAs: roots}); err == nil {
		conn.Close()
		t.Error("handshake for x.a.example.test succeeded: a wildcard covers one label only")
	}
	if got := p.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (one per wildcard)", got)
	}

	// A reload adds a wildcard answered by the hook.
	extra := fmt.Sprintf(`"*.api.example.test": %s
  - names: ["*.api.example.test"]
    challenge: dns-01
    dns:
      hook: %s
      check_servers: [%q]
`, backend(t, "api"), hook, b.Addr)
	first, rest, _ := strings.Cut(extra, "\n")
	if err := os.WriteFile(mapFile, []byte(first+"\n"+base+rest), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "mapping reloaded", 1)
	check(addr, "v1.api.example.test", "api", "*.api.example.test")
	check(addr, "c.example.test", "web", "*.example.test")
	if got := b.TXT(t, "_acme-challenge.example.test."); len(got) != 0 {
		t.Errorf("TXT records left: %q", got)
	}
	if got := b.TXT(t, "_acme-challenge.api.example.test."); len(got) != 0 {
		t.Errorf("TXT records left by the hook: %q", got)
	}
}
