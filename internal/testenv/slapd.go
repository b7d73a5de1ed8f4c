package testenv

// OpenLDAP's slapd for integration tests: a server with an mdb database
// holding a base entry and one user with a password, on a free 127.0.0.1
// port, optionally with TLS (StartTLS on that port, LDAPS on a second one)
// and a requirement of TLS for every operation.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// SlapdOptions configure StartSlapd. The zero value is a plaintext server
// for dc=example,dc=test.
type SlapdOptions struct {
	// Org names the base entry: dc=<Org>,dc=test; "" means "example".
	Org string
	// CertPEM and KeyPEM, when set, give the server TLS: StartTLS on its
	// port and LDAPS on LDAPSAddr. Clients are not asked for certificates.
	CertPEM, KeyPEM []byte
	// RequireTLS refuses every operation but StartTLS on a connection
	// without TLS (security ssf=128): slapd answers confidentialityRequired.
	RequireTLS bool
}

// Slapd is a running throwaway slapd.
type Slapd struct {
	Addr      string // 127.0.0.1:port, ldap:// (plaintext, and StartTLS with TLS)
	LDAPSAddr string // 127.0.0.1:port, ldaps://; "" without TLS
	BaseDN    string // dc=<Org>,dc=test
	// UserDN and Password are the user entry's, for a simple bind that
	// slapd checks against its userPassword.
	UserDN, Password string

	proc *process
}

// StartSlapd starts slapd on free 127.0.0.1 ports with a database made
// by slapadd, and stops it when the test ends. Without slapd the test is
// skipped (slapd package).
func StartSlapd(t testing.TB, opts SlapdOptions) *Slapd {
	t.Helper()
	bin := LookBinary(t, "slapd", "slapd")
	slapadd := LookBinary(t, "slapadd", "slapd")
	org := opts.Org
	if org == "" {
		org = "example"
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	sl := &Slapd{
		BaseDN:   "dc=" + org + ",dc=test",
		Password: "pw-" + org,
	}
	sl.UserDN = "uid=alice," + sl.BaseDN
	conf := []string{
		"include /etc/ldap/schema/core.schema",
		"include /etc/ldap/schema/cosine.schema",
		"include /etc/ldap/schema/inetorgperson.schema",
		"modulepath /usr/lib/ldap",
		"moduleload back_mdb",
		"pidfile " + filepath.Join(dir, "slapd.pid"),
		"argsfile " + filepath.Join(dir, "slapd.args"),
	}
	if opts.RequireTLS {
		conf = append(conf, "security ssf=128")
	}
	if len(opts.CertPEM) > 0 {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		for name, b := range map[string][]byte{crt: opts.CertPEM, key: opts.KeyPEM} {
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatalf("testenv: %v", err)
			}
		}
		conf = append(conf, "TLSCertificateFile "+crt, "TLSCertificateKeyFile "+key, "TLSVerifyClient never")
	}
	conf = append(conf,
		"database mdb",
		"maxsize 16777216",
		`suffix "`+sl.BaseDN+`"`,
		`rootdn "cn=admin,`+sl.BaseDN+`"`,
		"directory "+db,
		"access to attrs=userPassword by anonymous auth by self read by * none",
		"access to * by * read",
	)
	confFile := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ldif := fmt.Sprintf(`dn: %s
objectClass: dcObject
objectClass: organization
dc: %s
o: %s

dn: %s
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: %s
`, sl.BaseDN, org, org, sl.UserDN, sl.Password)
	ldifFile := filepath.Join(dir, "data.ldif")
	if err := os.WriteFile(ldifFile, []byte(ldif), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if out, err := exec.Command(slapadd, "-f", confFile, "-l", ldifFile).CombinedOutput(); err != nil {
		t.Fatalf("testenv: slapadd: %v\n%s", err, out)
	}

	port := FreePort(t)
	sl.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	urls := "ldap://" + sl.Addr + "/"
	if len(opts.CertPEM) > 0 {
		sl.LDAPSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		urls += " ldaps://" + sl.LDAPSAddr + "/"
	}
	// -d 0 keeps slapd in the foreground, logging to stderr.
	sl.proc = startProcess(t, "slapd", exec.Command(bin, "-f", confFile, "-h", urls, "-d", "0"))
	sl.proc.waitReady(t, 20*time.Second, sl.bindable(opts))
	return sl
}

// bindable returns a readiness check: a simple bind as the user in
// plaintext succeeds, so slapd has its database open and checks
// passwords; with RequireTLS, slapd refuses it with
// confidentialityRequired instead, which says as much.
func (sl *Slapd) bindable(opts SlapdOptions) func() error {
	return func() error {
		c, err := ldap.DialURL("ldap://"+sl.Addr, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetTimeout(5 * time.Second)
		err = c.Bind(sl.UserDN, sl.Password)
		if opts.RequireTLS && ldap.IsErrorWithCode(err, ldap.LDAPResultConfidentialityRequired) {
			return nil
		}
		return err
	}
}

// Stop stops the server; it runs at the end of the test anyway. Tests
// call it to make a backend go down.
func (sl *Slapd) Stop() { sl.proc.stop() }
