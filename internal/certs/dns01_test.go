package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

// dnsTestZone is the zone the dns-01 tests' BIND serves.
const dnsTestZone = "example.test."

// startDNS01 starts BIND for dnsTestZone and Pebble validating against it.
func startDNS01(t *testing.T) (*testenv.BIND, *testenv.Pebble) {
	t.Helper()
	b := testenv.StartBIND(t, dnsTestZone, testenv.NewTSIGKey(t, "leproxy-test."))
	p := testenv.StartPebble(t, testenv.FreePort(t), testenv.FreePort(t), testenv.WithPebbleDNS(b.Addr))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("named log:\n%s", b.Log())
		}
	})
	return b, p
}

// rfc2136Rule is a dns-01 rule for names through b with secret.
func rfc2136Rule(t *testing.T, b *testenv.BIND, secret string, names ...string) ChallengeRule {
	t.Helper()
	prov, err := NewRFC2136(RFC2136Config{Server: b.Addr, Zone: b.Zone, KeyName: b.Key.Name, Algorithm: b.Key.Algorithm, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return ChallengeRule{Names: names, Type: challengeDNS01, DNS01: &DNS01{Provider: prov, CheckServers: []string{b.Addr}, PropagationTimeout: 20 * time.Second}}
}

// dnsManager is a Manager on p with rules, then hosts allowed.
func dnsManager(t *testing.T, p *testenv.Pebble, cacheDir string, rules []ChallengeRule, hosts ...string) (*Manager, *logBuffer) {
	t.Helper()
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{CacheDir: cacheDir, DirectoryURL: p.DirectoryURL, RootCAs: p.ServerRoots, Logger: logger})
	if err := m.SetChallenges(rules); err != nil {
		t.Fatal(err)
	}
	m.SetHosts(hosts)
	return m, logs
}

// TestDNS01WildcardRFC2136 issues *.example.test by dns-01 through RFC 2136
// updates signed with TSIG into a real BIND that Pebble validates against,
// serves it for names one label under it only, and removes the TXT record.
func TestDNS01WildcardRFC2136(t *testing.T) {
	b, p := startDNS01(t)
	cacheDir := t.TempDir()
	m, logs := dnsManager(t, p, cacheDir, []ChallengeRule{rfc2136Rule(t, b, b.Key.Secret, "*.example.test")}, "*.example.test")
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	roots := p.IssuerRoots(t)

	cs, err := handshake(addr, &tls.Config{ServerName: "a.example.test", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake for a.example.test (orders *.example.test by dns-01): %v\nlog:\n%s", err, logs)
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Equal(leaf.DNSNames, []string{"*.example.test"}) {
		t.Errorf("certificate for %v, want [*.example.test]", leaf.DNSNames)
	}
	cs2, err := handshake(addr, &tls.Config{ServerName: "b.example.test", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake for b.example.test: %v", err)
	}
	if !cs2.PeerCertificates[0].Equal(leaf) || p.Orders() != 1 {
		t.Errorf("b.example.test: %d orders, same certificate %v; want one wildcard for both", p.Orders(), cs2.PeerCertificates[0].Equal(leaf))
	}
	if _, err := handshake(addr, &tls.Config{ServerName: "x.a.example.test", RootCAs: roots}); err == nil {
		t.Error("handshake for x.a.example.test succeeded: a wildcard covers one label only")
	}
	if _, err := handshake(addr, &tls.Config{ServerName: "example.test", RootCAs: roots}); err == nil {
		t.Error("handshake for example.test succeeded: not in the mapping")
	}
	if got := b.TXT(t, "_acme-challenge.example.test."); len(got) != 0 {
		t.Errorf("TXT records left after the order: %q", got)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "*.example.test")); err != nil {
		t.Errorf("wildcard certificate not cached: %v", err)
	}
	if got := logs.count("certificate obtained", "host=*.example.test", "source=acme"); got != 1 {
		t.Errorf("%d \"certificate obtained\" records for *.example.test, want 1; log:\n%s", got, logs)
	}
	if st := m.Status(); len(st) != 1 || st[0].Host != "*.example.test" || !st[0].NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("Status() = %+v, want *.example.test with the served certificate", st)
	}
}

// TestDNS01Hook issues a certificate through an exec hook that writes into
// BIND with nsupdate, and checks the hook's arguments and environment.
func TestDNS01Hook(t *testing.T) {
	b, p := startDNS01(t)
	nsupdate := testenv.LookBinary(t, "nsupdate", "bind9-dnsutils")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tsig.conf")
	if err := os.WriteFile(keyFile, fmt.Appendf(nil, "key %q { algorithm %s; secret %q; };\n", b.Key.Name, b.Key.Algorithm, b.Key.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(b.Addr, ":")
	calls := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "hook.sh")
	err := os.WriteFile(script, fmt.Appendf(nil, `#!/bin/sh
set -e
echo "$1 $2 $3 $CERTBOT_DOMAIN $CERTBOT_VALIDATION" >> %[1]s
case "$1" in present) op=add ;; cleanup) op=delete ;; *) exit 2 ;; esac
printf 'server %[2]s %[3]s\nzone %[4]s\nupdate %%s %%s 60 TXT "%%s"\nsend\n' "$op" "$2" "$3" | %[5]s -k %[6]s
`, calls, host, port, b.Zone, nsupdate, keyFile), 0o700)
	if err != nil {
		t.Fatal(err)
	}
	rule := ChallengeRule{Names: []string{"h.example.test"}, Type: challengeDNS01,
		DNS01: &DNS01{Provider: &DNSHook{Path: script, Timeout: time.Minute}, CheckServers: []string{b.Addr}, PropagationTimeout: 20 * time.Second}}
	m, logs := dnsManager(t, p, t.TempDir(), []ChallengeRule{rule}, "h.example.test")
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	cs, err := handshake(addr, &tls.Config{ServerName: "h.example.test", RootCAs: p.IssuerRoots(t)})
	if err != nil {
		t.Fatalf("handshake (orders by dns-01 through the hook): %v\nlog:\n%s", err, logs)
	}
	if !slices.Equal(cs.PeerCertificates[0].DNSNames, []string{"h.example.test"}) {
		t.Errorf("certificate for %v, want h.example.test", cs.PeerCertificates[0].DNSNames)
	}
	data, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("hook calls:\n%s\nwant present then cleanup", data)
	}
	for i, step := range []string{"present", "cleanup"} {
		f := strings.Fields(lines[i])
		if len(f) != 5 || f[0] != step || f[1] != "_acme-challenge.h.example.test." || f[3] != "h.example.test" || f[2] != f[4] || len(f[2]) != 43 {
			t.Errorf("hook call %d = %q, want %s _acme-challenge.h.example.test. VALUE h.example.test VALUE", i, lines[i], step)
		}
	}
	if got := b.TXT(t, "_acme-challenge.h.example.test."); len(got) != 0 {
		t.Errorf("TXT records left after cleanup: %q", got)
	}
}

// TestDNS01BadTSIG: a wrong TSIG secret fails the order with BIND's answer
// (NOTAUTH, BADSIG) in Status and the log, backs off, and a handshake
// during the backoff places no new order.
func TestDNS01BadTSIG(t *testing.T) {
	b, p := startDNS01(t)
	wrong := testenv.NewTSIGKey(t, "x.").Secret
	clk := newFakeClock(time.Now().Add(time.Hour))
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: p.DirectoryURL, RootCAs: p.ServerRoots, Logger: logger, clock: clk, noARI: true})
	if err := m.SetChallenges([]ChallengeRule{rfc2136Rule(t, b, wrong, "*.example.test")}); err != nil {
		t.Fatal(err)
	}
	m.SetHosts([]string{"*.example.test"})
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if _, err := m.certificate(ctx, ecdsaHello("a.example.test")); err == nil || !strings.Contains(err.Error(), "NOTAUTH") {
		t.Fatalf("certificate with a wrong TSIG secret: %v, want an error naming NOTAUTH", err)
	}
	st := statusOfHost(m, "*.example.test")
	if st.Failures != 1 || !strings.Contains(st.LastError, "dns-01") || !strings.Contains(st.LastError, "BADSIG") {
		t.Errorf("Status = %+v, want 1 failure naming dns-01 and BADSIG", st)
	}
	if want := st.LastAttempt.Add(backoffMin); !st.NextAttempt.Equal(want) {
		t.Errorf("NextAttempt = %v, want %v (the first backoff)", st.NextAttempt, want)
	}
	if got := logs.count("certificate failed", "host=*.example.test", "ca="+p.DirectoryURL, "challenge=dns-01", "dns_rcode=NOTAUTH", "failures=1"); got != 1 {
		t.Errorf("%d \"certificate failed\" records with host, ca, challenge, rcode; want 1; log:\n%s", got, logs)
	}
	orders := p.Orders()
	if _, err := m.certificate(ctx, ecdsaHello("b.example.test")); err == nil || !strings.Contains(err.Error(), "next attempt") {
		t.Errorf("certificate during the backoff: %v, want the backoff error", err)
	}
	waitPass(t, m)
	if got := p.Orders(); got != orders {
		t.Errorf("%d orders during the backoff, want none", got-orders)
	}
	if got := b.TXT(t, "_acme-challenge.example.test."); len(got) != 0 {
		t.Errorf("TXT records with a refused update: %q", got)
	}
}

// TestDNSHookFailure: a hook's non-zero exit is an error carrying its
// output, and a hook that hangs is killed after its timeout.
func TestDNSHookFailure(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fail := &DNSHook{Path: write("fail.sh", "echo 'zone example.test not managed here' >&2\nexit 3\n")}
	err := fail.Present(context.Background(), "_acme-challenge.example.test.", "v")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "zone example.test not managed here") {
		t.Errorf("failing hook: %v, want its exit status and stderr", err)
	}
	hang := &DNSHook{Path: write("hang.sh", "sleep 60 &\nwait\n"), Timeout: 300 * time.Millisecond}
	start := time.Now()
	err = hang.Present(context.Background(), "_acme-challenge.example.test.", "v")
	if err == nil || !strings.Contains(err.Error(), "killed after") {
		t.Errorf("hanging hook: %v, want killed after its timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hanging hook returned after %v, want about its timeout", d)
	}
}

// TestWaitForTXTTimeout: a record no check server serves fails the
// challenge once the propagation timeout passes, naming the server.
func TestWaitForTXTTimeout(t *testing.T) {
	b := testenv.StartBIND(t, dnsTestZone, testenv.NewTSIGKey(t, "k."))
	err := waitForTXT(context.Background(), []string{b.Addr}, "_acme-challenge.none.example.test.", "v", 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), b.Addr) {
		t.Errorf("waitForTXT for a missing record: %v, want a timeout naming %s", err, b.Addr)
	}
}

// TestSetChallengesRefuses rules that cannot work.
func TestSetChallengesRefuses(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	for _, r := range []ChallengeRule{
		{Names: []string{"*.example.test"}, Type: challengeTLSALPN01},
		{Names: []string{"a.example.test"}, Type: challengeDNS01},
		{Names: []string{"a.example.test"}, Type: "dns-02"},
	} {
		if err := m.SetChallenges([]ChallengeRule{r}); err == nil {
			t.Errorf("SetChallenges(%+v) succeeded", r)
		}
	}
}

// TestLocalWildcard: a wildcard under .localhost comes from the local CA,
// name-constrained root included, and verifies for a name one label under
// it only.
func TestLocalWildcard(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: "https://127.0.0.1:1/unused"})
	m.SetHosts([]string{"*.app.localhost"})
	if _, _, err := m.ca.ensureRoot(); err != nil {
		t.Fatal(err)
	}
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	roots := readRoots(t, m.LocalRootPath())
	cs, err := handshake(addr, &tls.Config{ServerName: "x.app.localhost", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake for x.app.localhost: %v", err)
	}
	if got := cs.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{"*.app.localhost"}) {
		t.Errorf("certificate for %v, want [*.app.localhost]", got)
	}
	if _, err := handshake(addr, &tls.Config{ServerName: "y.x.app.localhost", RootCAs: roots}); err == nil {
		t.Error("handshake for y.x.app.localhost succeeded")
	}
}

// TestChallengeTypes: a name's rule chooses its challenge; names without
// one try tls-alpn-01 then http-01 (when the HTTP handler is wired); a
// wildcard without a dns-01 rule and http-01 without the handler fail.
func TestChallengeTypes(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: "https://127.0.0.1:1/unused"})
	dns := &DNS01{Provider: &DNSHook{Path: "/bin/true"}}
	err := m.SetChallenges([]ChallengeRule{
		{Names: []string{"*.Example.test", "d.example.test"}, Type: challengeDNS01, DNS01: dns},
		{Names: []string{"h.example.test"}, Type: challengeHTTP01},
		{Names: []string{"t.example.test"}, Type: challengeTLSALPN01},
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(host string, want []string, wantErr string) {
		t.Helper()
		got, d, err := m.challengeTypes(host)
		switch {
		case wantErr != "":
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("challengeTypes(%s) = %v, %v; want an error containing %q", host, got, err, wantErr)
			}
		case err != nil || !slices.Equal(got, want) || (want[0] == challengeDNS01) != (d == dns):
			t.Errorf("challengeTypes(%s) = %v, %v, %v; want %v", host, got, d, err, want)
		}
	}
	check("*.example.test", []string{"dns-01"}, "")
	check("d.example.test", []string{"dns-01"}, "")
	check("t.example.test", []string{"tls-alpn-01"}, "")
	check("o.example.test", []string{"tls-alpn-01"}, "")
	check("h.example.test", nil, "no HTTP listener")
	check("*.other.test", nil, "needs a dns-01 challenge rule")
	m.HTTPHandler(nil)
	check("h.example.test", []string{"http-01"}, "")
	check("o.example.test", []string{"tls-alpn-01", "http-01"}, "")
}

// TestDNS01HookFailsOrder: a hook's non-zero exit fails the order, and its
// output is in Status and the log.
func TestDNS01HookFailsOrder(t *testing.T) {
	_, p := startDNS01(t)
	script := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = cleanup ] && exit 0\necho \"no credentials for $CERTBOT_DOMAIN\" >&2\nexit 7\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	rule := ChallengeRule{Names: []string{"f.example.test"}, Type: challengeDNS01, DNS01: &DNS01{Provider: &DNSHook{Path: script}}}
	m, logs := dnsManager(t, p, t.TempDir(), []ChallengeRule{rule}, "f.example.test")
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if _, err := m.certificate(ctx, ecdsaHello("f.example.test")); err == nil {
		t.Fatal("certificate through a failing hook succeeded")
	}
	st := statusOfHost(m, "f.example.test")
	if st.Failures != 1 || !strings.Contains(st.LastError, "exit status 7") || !strings.Contains(st.LastError, "no credentials for f.example.test") {
		t.Errorf("Status = %+v, want the hook's exit status and output", st)
	}
	if got := logs.count("certificate failed", "host=f.example.test", "challenge=dns-01"); got != 1 {
		t.Errorf("%d \"certificate failed\" records, want 1; log:\n%s", got, logs)
	}
}

// TestDNSFailureIsNotTheIssuers: an unreachable DNS server fails the
// challenge without making the issuer look unavailable (every issuer would
// meet the same DNS), and the DNS server's rcode stays visible.
func TestDNSFailureIsNotTheIssuers(t *testing.T) {
	port := testenv.FreePort(t) // reserved, nothing listens
	prov, err := NewRFC2136(RFC2136Config{Server: fmt.Sprintf("127.0.0.1:%d", port), Zone: "example.test.", KeyName: "k.", Secret: "c2VjcmV0"})
	if err != nil {
		t.Fatal(err)
	}
	perr := prov.Present(context.Background(), "_acme-challenge.example.test.", "v")
	if perr == nil {
		t.Fatal("update to a closed port succeeded")
	}
	wrapped := &orderError{challenge: challengeDNS01, err: &dnsSideError{perr}}
	if !unavailable(perr) || unavailable(wrapped) {
		t.Errorf("unavailable(raw) = %v, unavailable(wrapped) = %v; want true, false", unavailable(perr), unavailable(wrapped))
	}
	de := &DNSError{Op: "x", Server: "s", Rcode: 9}
	var got *DNSError
	if !errors.As(&orderError{err: &dnsSideError{fmt.Errorf("w: %w", de)}}, &got) || got != de {
		t.Error("DNSError not found through dnsSideError")
	}
	if !errors.Is(&dnsSideError{fmt.Errorf("w: %w", context.DeadlineExceeded)}, context.DeadlineExceeded) {
		t.Error("context error not found through dnsSideError")
	}
}
