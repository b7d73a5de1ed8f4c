package testenv

// BIND 9 for integration tests: an authoritative server for one dynamic
// zone that accepts RFC 2136 updates signed with one TSIG key, on a free
// 127.0.0.1 port (UDP and TCP), from the Debian package bind9.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TSIGKey is a TSIG key as BIND and RFC 2136 clients name it.
type TSIGKey struct {
	// Name is the key's name, a domain name such as "leproxy.".
	Name string
	// Algorithm is BIND's name of the HMAC, such as "hmac-sha256".
	Algorithm string
	// Secret is the key, base64.
	Secret string
}

// NewTSIGKey returns an hmac-sha256 key named name with a random secret.
func NewTSIGKey(t testing.TB, name string) TSIGKey {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	return TSIGKey{Name: dns.Fqdn(name), Algorithm: "hmac-sha256", Secret: base64.StdEncoding.EncodeToString(secret)}
}

// BIND is a running throwaway named.
type BIND struct {
	// Addr is 127.0.0.1:port, for UDP and TCP.
	Addr string
	// Zone is the dynamic zone it is authoritative for, fully qualified.
	Zone string
	// Key is the TSIG key that may update Zone.
	Key TSIGKey

	proc *process
}

// StartBIND starts named (BIND 9) authoritative for zone, whose records
// may be updated by RFC 2136 messages signed with key, and stops it when
// the test ends. It returns once named answers a SOA query for zone. Without
// named the test is skipped (bind9 package), or fails under
// LEPROXY_INTEGRATION=require.
func StartBIND(t testing.TB, zone string, key TSIGKey) *BIND {
	t.Helper()
	bin := LookBinary(t, "named", "bind9")
	zone = dns.Fqdn(strings.ToLower(zone))
	dir := t.TempDir()
	port := FreePort(t)
	b := &BIND{Addr: "127.0.0.1:" + strconv.Itoa(port), Zone: zone, Key: key}

	zoneFile := filepath.Join(dir, "zone.db")
	soa := fmt.Sprintf("$TTL 60\n@ IN SOA ns1.%[1]s hostmaster.%[1]s 1 3600 600 86400 60\n@ IN NS ns1.%[1]s\nns1 IN A 127.0.0.1\n", zone)
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
key "%[3]s" {
	algorithm %[4]s;
	secret "%[5]s";
};
zone "%[6]s" {
	type primary;
	file "%[7]s";
	allow-update { key "%[3]s"; };
};
`, dir, port, key.Name, key.Algorithm, key.Secret, zone, zoneFile)
	confFile := filepath.Join(dir, "named.conf")
	for path, data := range map[string]string{zoneFile: soa, confFile: conf} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// named drops root privileges only with -u; as root it runs as the
	// bind user, which must own the directory (the journal lives there).
	args := []string{"-g", "-c", confFile, "-p", strconv.Itoa(port), "-n", "1", "-4"}
	if cred := serviceUser(t, "bind", "bind9"); cred != nil {
		// t.TempDir's parent is private to root.
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil { // #nosec G302 -- traversal only, for the bind user
			t.Fatalf("testenv: %v", err)
		}
		for _, p := range []string{dir, zoneFile, confFile} {
			if err := chownTo(cred, p); err != nil {
				t.Fatalf("testenv: %v", err)
			}
		}
		args = append(args, "-u", "bind")
	}
	b.proc = startProcess(t, "named", exec.Command(bin, args...)) // #nosec G204 -- test helper, arguments built here
	b.proc.waitReady(t, 20*time.Second, func() error {
		_, err := b.query(zone, dns.TypeSOA)
		return err
	})
	return b
}

// query asks named for name's records of type qtype over TCP.
func (b *BIND) query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, b.Addr)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: rcode %s", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// TXT returns the TXT strings of name (each record's strings joined) that
// named serves now; none for a name without TXT records.
func (b *BIND) TXT(t testing.TB, name string) []string {
	t.Helper()
	r, err := b.query(name, dns.TypeTXT)
	if err != nil {
		t.Fatalf("testenv: querying named: %v", err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out
}

// Log returns named's output so far (its tail), for a failing test.
func (b *BIND) Log() string { return b.proc.out.String() }
