package ldap

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// slapdEnv is leproxy in front of two real slapd servers:
//
//	alpha  plaintext only (dc=alpha,dc=test)
//	bravo  TLS with a certificate of the test CA for 127.0.0.1, StartTLS
//	       on Addr and LDAPS on LDAPSAddr, refusing every operation on a
//	       connection without TLS (dc=bravo,dc=test)
//
// and these routes, a.test the default:
//
//	a.test → alpha               (tls: none)
//	b.test → bravo, StartTLS     (tls: verify, the test CA)
//	c.test → bravo, LDAPS        (tls: strict, the test CA)
//	d.test → bravo, StartTLS     (tls: insecure)
//	e.test → bravo in plaintext  (tls: none: bravo refuses)
//	f.test → nothing listening
//	g.test → bravo, StartTLS     (tls: verify, another CA)
type slapdEnv struct {
	p            *dbtest.Proxy
	ca           *dbtest.CA
	caFile       string
	alpha, bravo *testenv.Slapd
}

func startSlapdEnv(t *testing.T) *slapdEnv {
	t.Helper()
	ca := dbtest.NewCA(t)
	_, crt, key := ca.Issue(t, "127.0.0.1")
	e := &slapdEnv{ca: ca}
	e.alpha = testenv.StartSlapd(t, testenv.SlapdOptions{Org: "alpha"})
	e.bravo = testenv.StartSlapd(t, testenv.SlapdOptions{Org: "bravo", CertPEM: crt, KeyPEM: key, RequireTLS: true})
	routes := []dbproxy.Route{
		{Host: "a.test", Backend: e.alpha.Addr},
		{Host: "b.test", Backend: e.bravo.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool},
		{Host: "c.test", Backend: e.bravo.LDAPSAddr, TLS: dbproxy.TLSStrict, RootCAs: ca.Pool},
		{Host: "d.test", Backend: e.bravo.Addr, TLS: dbproxy.TLSInsecure},
		{Host: "e.test", Backend: e.bravo.Addr},
		{Host: "f.test", Backend: dbtest.ClosedAddr(t)},
		{Host: "g.test", Backend: e.bravo.Addr, TLS: dbproxy.TLSVerify, RootCAs: dbtest.NewCA(t).Pool},
	}
	// ldapsearch connects to 127.0.0.1 and sends no server name for an
	// IP address: it gets the default's certificate, which names it too.
	certs := map[string]*tls.Certificate{}
	for _, r := range routes {
		names := []string{r.Host}
		if r.Host == "a.test" {
			names = append(names, "127.0.0.1")
		}
		c, _, _ := ca.Issue(t, names...)
		certs[r.Host] = &c
	}
	proto, _ := dbproxy.Lookup("ldap")
	e.p = dbtest.StartProxy(t, ca, dbproxy.Config{
		Protocol: proto, Routes: routes, Default: "a.test",
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return certs[h.ServerName], nil },
	})
	e.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(e.caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// backend returns the slapd behind a route of slapdEnv.
func (e *slapdEnv) backend(host string) *testenv.Slapd {
	if host == "a.test" {
		return e.alpha
	}
	return e.bravo
}

// ldapsearch runs ldapsearch with args against the proxy at url, trusting
// the test CA and demanding a valid certificate, and returns its output
// and exit error.
func (e *slapdEnv) ldapsearch(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testenv.LookBinary(t, "ldapsearch", "ldap-utils")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-o", "nettimeout=10"}, args...)...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "LDAPCONF="+os.DevNull, "LDAPTLS_CACERT="+e.caFile, "LDAPTLS_REQCERT=demand")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ldapsearch %v did not finish: %s", args, out.String())
	}
	t.Logf("ldapsearch %s: %v\n%s", strings.Join(args, " "), err, out.String())
	return out.String(), err
}

// ldapsearch -ZZ (StartTLS required) and ldaps:// through leproxy to a
// backend without TLS; slapd checks the password.
func TestLdapsearch(t *testing.T) {
	e := startSlapdEnv(t)
	a := e.alpha
	search := func(url, pw string, extra ...string) (string, error) {
		args := append(extra, "-H", url, "-x", "-D", a.UserDN, "-w", pw, "-b", a.BaseDN, "(uid=alice)", "cn")
		return e.ldapsearch(t, args...)
	}
	ldapURL, ldapsURL := "ldap://"+e.p.Addr, "ldaps://"+e.p.Addr

	for _, tc := range []struct {
		name string
		url  string
		zz   []string
	}{
		{"StartTLS", ldapURL, []string{"-ZZ"}},
		{"LDAPS", ldapsURL, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := search(tc.url, a.Password, tc.zz...)
			if err != nil || !strings.Contains(out, "dn: "+a.UserDN) || !strings.Contains(out, "cn: Alice") {
				t.Errorf("ldapsearch: %v, printed %q; want alice's entry", err, out)
			}
			out, err = search(tc.url, "wrong", tc.zz...)
			if err == nil || !strings.Contains(out, "Invalid credentials (49)") {
				t.Errorf("wrong password: %v, printed %q; want slapd's invalid credentials", err, out)
			}
		})
	}
	t.Run("NoTLS", func(t *testing.T) {
		out, err := search(ldapURL, a.Password)
		if err == nil || !strings.Contains(out, "Confidentiality required (13)") || !strings.Contains(out, "TLS is required for a.test") {
			t.Errorf("ldapsearch without -ZZ: %v, printed %q; want leproxy's confidentiality required", err, out)
		}
	})
	t.Run("UntrustedCertificate", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.pem")
		if err := os.WriteFile(other, dbtest.NewCA(t).PEM, 0o600); err != nil {
			t.Fatal(err)
		}
		saved := e.caFile
		e.caFile = other
		defer func() { e.caFile = saved }()
		if out, err := search(ldapURL, a.Password, "-ZZ"); err == nil || strings.Contains(out, "cn: Alice") {
			t.Errorf("ldapsearch trusting another CA: %v, printed %q; want a TLS failure", err, out)
		}
	})
}

// dialGoLDAP connects go-ldap to the proxy with StartTLS or LDAPS and
// server name sni, verifying the certificate for verifyName.
func (e *slapdEnv) dialGoLDAP(t *testing.T, ldaps bool, sni, verifyName string) *goldap.Conn {
	t.Helper()
	cfg := e.ca.ClientConfig(sni, verifyName)
	var c *goldap.Conn
	var err error
	if ldaps {
		c, err = goldap.DialURL("ldaps://"+e.p.Addr, goldap.DialWithTLSConfig(cfg))
	} else if c, err = goldap.DialURL("ldap://" + e.p.Addr); err == nil {
		c.SetTimeout(10 * time.Second)
		if err = c.StartTLS(cfg); err != nil {
			c.Close()
		}
	}
	if err != nil {
		t.Fatalf("connecting to %s (LDAPS %v): %v", sni, ldaps, err)
	}
	c.SetTimeout(10 * time.Second)
	t.Cleanup(func() { c.Close() })
	return c
}

// searchAlice binds as the backend's user and returns the cn of its
// entry, found under the backend's base DN.
func searchAlice(c *goldap.Conn, sl *testenv.Slapd, password string) (string, error) {
	if err := c.Bind(sl.UserDN, password); err != nil {
		return "", err
	}
	res, err := c.Search(goldap.NewSearchRequest(sl.BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		0, 10, false, "(uid=alice)", []string{"cn"}, nil))
	if err != nil {
		return "", err
	}
	if len(res.Entries) != 1 {
		return "", &goldap.Error{ResultCode: goldap.LDAPResultNoSuchObject, Err: os.ErrNotExist}
	}
	return res.Entries[0].GetAttributeValue("cn"), nil
}

// go-ldap with StartTLS and LDAPS, routed by SNI to each kind of backend
// connection; bravo refuses plaintext, so each success through it proves
// leproxy spoke TLS to it, as e.test's refusal shows.
func TestGoLDAP(t *testing.T) {
	e := startSlapdEnv(t)
	for _, ldaps := range []bool{false, true} {
		name := "StartTLS"
		if ldaps {
			name = "LDAPS"
		}
		t.Run(name, func(t *testing.T) {
			for _, host := range []string{"a.test", "b.test", "c.test", "d.test"} {
				sl := e.backend(host)
				cn, err := searchAlice(e.dialGoLDAP(t, ldaps, host, host), sl, sl.Password)
				if err != nil || cn != "Alice" {
					t.Errorf("%s: got %q, %v; want Alice from %s", host, cn, err, sl.BaseDN)
				}
			}
			// Routed by SNI: b.test is bravo, whose tree alpha lacks.
			c := e.dialGoLDAP(t, ldaps, "a.test", "a.test")
			if _, err := searchAlice(c, e.bravo, e.bravo.Password); err == nil {
				t.Error("bravo's user bound through a.test, whose backend is alpha")
			}
			// No server name: the default.
			if cn, err := searchAlice(e.dialGoLDAP(t, ldaps, "", "a.test"), e.alpha, e.alpha.Password); err != nil || cn != "Alice" {
				t.Errorf("no SNI: got %q, %v; want alpha's Alice", cn, err)
			}
		})
	}

	for _, tc := range []struct {
		name, sni string
		code      uint16
		want      string
	}{
		{"WrongPassword", "b.test", goldap.LDAPResultInvalidCredentials, ""},
		{"BackendRefusesPlaintext", "e.test", goldap.LDAPResultConfidentialityRequired, ""},
		{"BackendDown", "f.test", goldap.LDAPResultUnavailable, "leproxy: could not connect to the backend of f.test"},
		{"BackendUntrusted", "g.test", goldap.LDAPResultUnavailable, "leproxy: could not connect to the backend of g.test"},
		{"UnknownServerName", "h.test", goldap.LDAPResultUnavailable, "leproxy: no route for server name h.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verify := tc.sni
			if tc.sni == "h.test" {
				verify = "a.test"
			}
			pw := e.bravo.Password
			if tc.code == goldap.LDAPResultInvalidCredentials {
				pw = "wrong"
			}
			err := e.dialGoLDAP(t, false, tc.sni, verify).Bind(e.bravo.UserDN, pw)
			if !goldap.IsErrorWithCode(err, tc.code) || !strings.Contains(errString(err), tc.want) {
				t.Errorf("bind: %v; want result code %d with %q", err, tc.code, tc.want)
			}
		})
	}

	t.Run("Plaintext", func(t *testing.T) {
		c, err := goldap.DialURL("ldap://" + e.p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetTimeout(10 * time.Second)
		err = c.Bind(e.alpha.UserDN, e.alpha.Password)
		if !goldap.IsErrorWithCode(err, goldap.LDAPResultConfidentialityRequired) || !strings.Contains(errString(err), "TLS is required for a.test") {
			t.Errorf("plaintext bind: %v; want leproxy's confidentiality required", err)
		}
	})
}

// A route with plaintext: allow relays a client that never asks for TLS
// to its backend, whatever the backend's own TLS.
func TestGoLDAPPlaintextAllowed(t *testing.T) {
	ca := dbtest.NewCA(t)
	_, crt, key := ca.Issue(t, "127.0.0.1")
	bravo := testenv.StartSlapd(t, testenv.SlapdOptions{Org: "bravo", CertPEM: crt, KeyPEM: key, RequireTLS: true})
	p := dbtest.StartProtocol(t, ca, "ldap", "b.test",
		dbproxy.Route{Host: "b.test", Backend: bravo.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool, AllowPlaintext: true})
	c, err := goldap.DialURL("ldap://" + p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetTimeout(10 * time.Second)
	if cn, err := searchAlice(c, bravo, bravo.Password); err != nil || cn != "Alice" {
		t.Errorf("plaintext client: got %q, %v; want Alice", cn, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A second StartTLS, inside leproxy's TLS, is not leproxy's: it reaches the
// backend, and slapd refuses it, on a plaintext link (alpha has no TLS) as
// on a TLS one (bravo has TLS up already).
func TestSecondStartTLSReachesBackend(t *testing.T) {
	e := startSlapdEnv(t)
	for _, host := range []string{"a.test", "b.test", "c.test"} {
		c := e.p.Dial(t)
		tc, err := clientStartTLS(c, e.ca.ClientConfig(host, host))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		dbtest.MustWrite(t, tc, appendExtendedRequest(nil, 2, oidStartTLS))
		res, err := readResult(tc)
		if err != nil || res.id != 2 || res.code == resultSuccess || strings.Contains(res.diagnostic, "leproxy") {
			t.Errorf("%s: second StartTLS answered %+v, %v; want slapd's refusal", host, res, err)
		}
		t.Logf("%s: slapd answered the second StartTLS with %d %q", host, res.code, res.diagnostic)
		c.Close()
	}
}
