package mssql

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/tdstest"
)

// needTsql returns the path of FreeTDS's tsql, skipping the test without
// it (failing it with LEPROXY_INTEGRATION=require).
func needTsql(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("tsql")
	if err != nil {
		if os.Getenv("LEPROXY_INTEGRATION") == "require" {
			t.Fatal("tsql not on PATH (LEPROXY_INTEGRATION=require)")
		}
		t.Skip("tsql not on PATH; install the Debian package freetds-bin to run this test")
	}
	return path
}

// tsqlEnv is a proxy with routes a.test (the default) and b.test, whose
// certificate also names 127.0.0.1: FreeTDS sends no SNI, so it gets the
// default's certificate and checks it for the host it connected to.
func tsqlEnv(t *testing.T, routes ...dbproxy.Route) (*dbtest.Proxy, string) {
	t.Helper()
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "a.test", "b.test", "127.0.0.1")
	proto, _ := dbproxy.Lookup("mssql")
	p := dbtest.StartProxy(t, ca, dbproxy.Config{
		Protocol: proto, Routes: routes, Default: "a.test",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil },
	})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, caFile
}

// runTsql runs tsql against the freetds.conf section server (its name is
// what FreeTDS puts in LOGIN7 ServerName) pointing at the proxy, with the
// given encryption setting, sends script and returns what it printed.
func runTsql(t *testing.T, tsql, proxyAddr, caFile, server, encryption, user, password, script string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(proxyAddr)
	dir := t.TempDir()
	conf := fmt.Sprintf("[%s]\n\thost = %s\n\tport = %s\n\ttds version = 7.4\n\tencryption = %s\n\tca file = %s\n\tcheck certificate hostname = yes\n",
		server, host, port, encryption, caFile)
	confFile := filepath.Join(dir, "freetds.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tsql, "-S", server, "-U", user, "-P", password)
	cmd.Env = append(os.Environ(), "FREETDSCONF="+confFile, "HOME="+dir, "TDSDUMP=")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	defer func() { t.Logf("tsql -S %s (%s): %s", server, encryption, out.String()) }()
	cmd.Run() // tsql's exit status says little; its output is checked
	if ctx.Err() != nil {
		t.Fatalf("tsql did not finish: %s", out.String())
	}
	return out.String()
}

const tsqlQuery = "SELECT 1 AS n, @@SERVERNAME AS name\ngo\nexit\n"

// FreeTDS sends no SNI: leproxy routes it by the LOGIN7 ServerName (the
// freetds.conf section) and verifies nothing for it; tsql verifies
// leproxy's certificate against the CA for 127.0.0.1.
func TestTsql(t *testing.T) {
	tsql := needTsql(t)
	a := tdstest.Start(t, &tdstest.Server{Name: "alpha", Users: testUsers})
	b := tdstest.Start(t, &tdstest.Server{Name: "bravo", Users: testUsers})
	p, caFile := tsqlEnv(t, dbproxy.Route{Host: "a.test", Backend: a.Addr}, dbproxy.Route{Host: "b.test", Backend: b.Addr})

	for _, tc := range []struct{ server, want string }{
		{"b.test", "bravo"},    // LOGIN7 ServerName names a route
		{"elsewhere", "alpha"}, // it does not: the default
	} {
		for _, enc := range []string{"require", "request", "off"} {
			if enc == "off" && tc.server != "b.test" {
				continue
			}
			out := runTsql(t, tsql, p.Addr, caFile, tc.server, enc, "app", "s3cret", tsqlQuery)
			if enc == "off" {
				// encryption = off asks for NOT_SUP: refused in TDS.
				if !strings.Contains(out, "TLS is required for a.test") {
					t.Errorf("tsql with encryption = off printed %q, want leproxy's TLS refusal", out)
				}
				continue
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("tsql -S %s (encryption = %s) printed %q, want a row from %s", tc.server, enc, out, tc.want)
			}
		}
	}
	for _, lg := range append(a.Logins(), b.Logins()...) {
		if lg.User != "app" || !lg.OK {
			t.Errorf("backend login %+v", lg)
		}
	}
	if n := len(b.Logins()); n != 2 {
		t.Errorf("b.test's backend saw %d logins, want 2", n)
	}
}

func TestTsqlRefusals(t *testing.T) {
	tsql := needTsql(t)
	a := tdstest.Start(t, &tdstest.Server{Name: "alpha", Users: testUsers})
	p, caFile := tsqlEnv(t, dbproxy.Route{Host: "a.test", Backend: a.Addr}, dbproxy.Route{Host: "b.test", Backend: dbtest.ClosedAddr(t)})
	if out := runTsql(t, tsql, p.Addr, caFile, "a.test", "require", "app", "wrong", tsqlQuery); !strings.Contains(out, "Login failed for user 'app'") {
		t.Errorf("wrong password: tsql printed %q, want the backend's login failure", out)
	}
	if out := runTsql(t, tsql, p.Addr, caFile, "b.test", "require", "app", "s3cret", tsqlQuery); !strings.Contains(out, "could not connect to the backend of b.test (leproxy)") {
		t.Errorf("backend down: tsql printed %q, want leproxy's error", out)
	}
}
