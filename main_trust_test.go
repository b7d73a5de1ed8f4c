package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
	"github.com/leproxy/leproxy/internal/truststore"
)

// systemPoolDialEnv makes TestHelperSystemPoolDial, run by TestTrustUntrust
// in a child process, a Go program that dials the address in it with the
// system roots (loaded fresh by the new process).
const systemPoolDialEnv = "LEPROXY_TEST_SYSTEM_POOL_DIAL"

// TestHelperSystemPoolDial handshakes with $LEPROXY_TEST_SYSTEM_POOL_DIAL as
// x.localhost, verifying with the system roots: exit status 0 when
// verified, 3 when not, 1 on another error. It does nothing in a normal
// test run.
func TestHelperSystemPoolDial(t *testing.T) {
	addr := os.Getenv(systemPoolDialEnv)
	if addr == "" {
		return
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: "x.localhost"})
	if err == nil {
		c.Close()
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, err)
	var unverified *tls.CertificateVerificationError
	if errors.As(err, &unverified) {
		os.Exit(3)
	}
	os.Exit(1)
}

// TestTrustUntrust runs `leproxy trust` on this machine's real system store
// (update-ca-certificates) and on NSS databases in a temporary $HOME, and
// checks that curl and a Go program, both with the system roots and no
// CA option, verify the running proxy's local-CA certificate, and no
// longer after `leproxy untrust`. The system store is restored whatever
// happens.
func TestTrustUntrust(t *testing.T) {
	if os.Geteuid() != 0 {
		// Skipped even with LEPROXY_INTEGRATION=require, as Postfix's tests
		// are: GitHub's runners are not root (.ci/run is); they still run
		// TestTrustCreatesLocalCA on temporary stores.
		t.Skip("changing the system trust store needs root; run the tests as root to include it")
	}
	testenv.LookBinary(t, "update-ca-certificates", "ca-certificates")
	certutil := testenv.LookBinary(t, "certutil", "libnss3-tools")
	curl := testenv.LookBinary(t, "curl", "curl")
	sys, err := truststore.Detect()
	if err != nil {
		t.Fatal(err)
	}

	home := t.TempDir()
	nssdb := filepath.Join(home, ".pki", "nssdb")
	firefox := filepath.Join(home, ".mozilla", "firefox", "abcd1234.default-release")
	for _, dir := range []string{nssdb, firefox} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(certutil, "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput(); err != nil {
			t.Fatalf("certutil -N: %v\n%s", err, out)
		}
	}
	old := trustSeam
	trustSeam = &truststore.Options{Home: home}
	t.Cleanup(func() { trustSeam = old })

	cache := filepath.Join(t.TempDir(), "cache")
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "x.localhost: "+backend(t, "x")+"\n")
	startDaemon(t, addr, "-map", mapping, "-cache", cache, "-addr", addr, "-http", "")

	ctx := context.Background()
	var out bytes.Buffer
	// The root exists once the daemon serves a localhost name; trust
	// would create it otherwise (TestTrustCreatesLocalCA).
	root, err := truststore.ReadRoot(filepath.Join(cache, "local-ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(sys.Dir, root.FileName(sys))
	// Registered before trust runs: the machine's store is restored even
	// when the test fails half-way.
	t.Cleanup(func() {
		if _, err := os.Stat(installed); err == nil {
			os.Remove(installed)
			update := sys.Update
			if sys.Remove != nil {
				update = sys.Remove
			}
			if out, err := exec.Command(update[0], update[1:]...).CombinedOutput(); err != nil {
				t.Errorf("restoring the system store: %v\n%s", err, out)
			}
		}
	})

	curlStatus := func() int {
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command(curl, "-sS", "-o", "/dev/null", "--max-time", "10",
			"--resolve", "x.localhost:"+port+":127.0.0.1", "https://x.localhost:"+port+"/")
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Logf("curl: %s", b)
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	goStatus := func() int {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSystemPoolDial$")
		cmd.Env = append(os.Environ(), systemPoolDialEnv+"="+addr)
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Logf("Go system-pool dial: %s", b)
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	nssLists := func(dir string) bool {
		b, err := exec.Command(certutil, "-L", "-d", "sql:"+dir).CombinedOutput()
		if err != nil {
			t.Fatalf("certutil -L: %v\n%s", err, b)
		}
		return strings.Contains(string(b), root.Nickname())
	}

	// Before: untrusted (curl exits 60 on a certificate it cannot verify).
	if got := curlStatus(); got != 60 {
		t.Fatalf("before trust: curl exit status %d, want 60", got)
	}
	if got := goStatus(); got != 3 {
		t.Fatalf("before trust: Go dial status %d, want 3 (unverified)", got)
	}

	if err := runIO(ctx, []string{"trust", "-cache", cache}, &out, io.Discard); err != nil {
		t.Fatalf("leproxy trust: %v\n%s", err, &out)
	}
	t.Logf("leproxy trust:\n%s", &out)
	for _, want := range []string{"system store: added " + installed, "NSS sql:" + nssdb + ": added", "NSS sql:" + firefox + ": added"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("trust output lacks %q", want)
		}
	}
	if got := curlStatus(); got != 0 {
		t.Errorf("after trust: curl exit status %d, want 0", got)
	}
	if got := goStatus(); got != 0 {
		t.Errorf("after trust: Go dial status %d, want 0", got)
	}
	if !nssLists(nssdb) || !nssLists(firefox) {
		t.Errorf("after trust: certutil -L does not list %q in both databases", root.Nickname())
	}

	out.Reset()
	if err := runIO(ctx, []string{"trust", "-cache", cache}, &out, io.Discard); err != nil {
		t.Fatalf("leproxy trust again: %v", err)
	}
	if strings.Count(out.String(), "already there") != 3 {
		t.Errorf("second trust: want three stores already there, got:\n%s", &out)
	}

	out.Reset()
	if err := runIO(ctx, []string{"untrust", "-cache", cache}, &out, io.Discard); err != nil {
		t.Fatalf("leproxy untrust: %v\n%s", err, &out)
	}
	t.Logf("leproxy untrust:\n%s", &out)
	if !strings.Contains(out.String(), "system store: removed "+installed) {
		t.Errorf("untrust output lacks the removal of %s", installed)
	}
	if _, err := os.Stat(installed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after untrust %s: %v, want it gone", installed, err)
	}
	if got := curlStatus(); got != 60 {
		t.Errorf("after untrust: curl exit status %d, want 60", got)
	}
	// Nothing of the root is left in the system store, links included.
	if links, err := filepath.Glob("/etc/ssl/certs/leproxy-" + root.Fingerprint() + "*"); err != nil || len(links) > 0 {
		t.Errorf("after untrust: left in /etc/ssl/certs: %v %v", links, err)
	}
	if got := goStatus(); got != 3 {
		t.Errorf("after untrust: Go dial status %d, want 3", got)
	}
	if nssLists(nssdb) || nssLists(firefox) {
		t.Errorf("after untrust: certutil -L still lists %q", root.Nickname())
	}
}

// TestTrustCreatesLocalCA checks that trust makes the local CA, through the
// certificate manager, when the cache has none (and untrust never does),
// with stores in temporary directories.
func TestTrustCreatesLocalCA(t *testing.T) {
	anchors := t.TempDir()
	old := trustSeam
	trustSeam = &truststore.Options{
		System: &truststore.SystemStore{Name: "test", Dir: anchors, Ext: ".crt", Update: []string{"true"}},
		Home:   t.TempDir(),
	}
	t.Cleanup(func() { trustSeam = old })
	ctx := context.Background()

	missing := filepath.Join(t.TempDir(), "none")
	err := runIO(ctx, []string{"untrust", "-cache", missing}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no local CA root") {
		t.Errorf("untrust of a cache without a CA: got %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("untrust created %s", missing)
	}

	cache := filepath.Join(t.TempDir(), "cache")
	var out bytes.Buffer
	if err := runIO(ctx, []string{"trust", "-cache", cache}, &out, io.Discard); err != nil {
		t.Fatalf("trust: %v\n%s", err, &out)
	}
	root, err := truststore.ReadRoot(filepath.Join(cache, "local-ca", "root.pem"))
	if err != nil {
		t.Fatalf("trust made no local CA: %v", err)
	}
	if len(root.Cert.PermittedDNSDomains) == 0 {
		t.Error("a root made by trust without -acme local is not name-constrained")
	}
	b, err := os.ReadFile(filepath.Join(anchors, "leproxy-"+root.Fingerprint()+".crt"))
	if err != nil || !bytes.Equal(b, root.PEM) {
		t.Errorf("anchor file: %v", err)
	}
	if !strings.Contains(out.String(), "NSS: no browser database under") {
		t.Errorf("trust output does not say that no NSS database was found:\n%s", &out)
	}

	// Root making the CA in a service user's cache gives it to that user.
	if os.Geteuid() != 0 {
		return
	}
	owned := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(owned, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := runIO(ctx, []string{"trust", "-cache", owned}, io.Discard, io.Discard); err != nil {
		t.Fatalf("trust as root on a cache owned by 65534: %v", err)
	}
	for _, name := range []string{"local-ca", "local-ca/root.pem", "local-ca/root-key.pem"} {
		fi, err := os.Stat(filepath.Join(owned, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want the cache's 65534:65534", name, st.Uid, st.Gid)
		}
	}
}
