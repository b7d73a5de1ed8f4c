package testenv

// Postfix for the smtp integration tests: a throwaway instance in a
// temporary directory (its own configuration, queue and log file), with a
// plain smtpd port and one that reads the PROXY protocol header, that
// holds every message it accepts in its hold queue for the test to read.

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixOptions configure StartPostfix. The zero value is a Postfix
// without TLS.
type PostfixOptions struct {
	// CertPEM and KeyPEM, when set, make both smtpd ports offer STARTTLS
	// with this certificate.
	CertPEM, KeyPEM []byte
}

// Postfix is a running throwaway Postfix.
type Postfix struct {
	Addr string // 127.0.0.1:port of a plain smtpd
	// ProxyAddr is an smtpd with smtpd_upstream_proxy_protocol = haproxy:
	// every connection must start with a PROXY protocol header (v1 or v2).
	ProxyAddr string

	dir string // everything: etc, spool, data, maillog
}

// StartPostfix starts Postfix's master with its own configuration and
// queue under a new temporary directory, listening on two free 127.0.0.1
// ports, and stops it when the test ends. It relays for 127.0.0.0/8 and
// puts every message on hold (a header check), delivering nothing. Without
// the postfix package the test is skipped (failed with
// LEPROXY_INTEGRATION=require); when not root, it is skipped, since
// Postfix's master must start as root.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	bin := LookBinary(t, "postfix", "postfix")
	if os.Geteuid() != 0 {
		// Skipped even with LEPROXY_INTEGRATION=require: CI runners that
		// are not root (GitHub's) still run the same cases against the
		// in-process go-smtp server.
		t.Skip("testenv: Postfix's master must start as root; run the tests as root to include Postfix")
	}
	owner := serviceUser(t, "postfix", "postfix")
	// Short: Postfix's unix sockets live under the queue directory, and
	// their paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "pfx")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pf := &Postfix{dir: dir}
	etc, data := filepath.Join(dir, "etc"), filepath.Join(dir, "data")
	for _, d := range []string{etc, filepath.Join(dir, "spool"), data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := chownTo(owner, data); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	port, proxyPort := FreePort(t), FreePort(t)
	pf.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	pf.ProxyAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(proxyPort))
	mainCF := []string{
		"compatibility_level = 3.6",
		"queue_directory = " + filepath.Join(dir, "spool"),
		"data_directory = " + data,
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = postfix.test",
		"mydomain = postfix.test",
		"mydestination =",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"smtpd_relay_restrictions = permit_mynetworks, reject",
		"smtpd_peername_lookup = no", // no DNS here
		"smtpd_client_port_logging = yes",
		"disable_dns_lookups = yes",
		"smtputf8_enable = no",
		"header_checks = regexp:" + filepath.Join(etc, "header_checks"),
		"maillog_file = " + filepath.Join(dir, "maillog"),
		"maillog_file_prefixes = " + dir,
	}
	if len(opts.CertPEM) > 0 {
		crt, key := filepath.Join(etc, "smtpd.crt"), filepath.Join(etc, "smtpd.key")
		for name, b := range map[string][]byte{crt: opts.CertPEM, key: opts.KeyPEM} {
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatalf("testenv: %v", err)
			}
		}
		mainCF = append(mainCF, "smtpd_tls_security_level = may",
			"smtpd_tls_cert_file = "+crt, "smtpd_tls_key_file = "+key,
			"smtpd_tls_loglevel = 1")
	}
	masterCF := []string{
		pf.Addr + " inet n - n - - smtpd",
		pf.ProxyAddr + " inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy",
		"pickup unix n - n 60 1 pickup",
		"cleanup unix n - n - 0 cleanup",
		"qmgr unix n - n 300 1 qmgr",
		"tlsmgr unix - - n 1000? 1 tlsmgr",
		"rewrite unix - - n - - trivial-rewrite",
		"bounce unix - - n - 0 bounce",
		"defer unix - - n - 0 bounce",
		"trace unix - - n - 0 bounce",
		"verify unix - - n - 1 verify",
		"proxymap unix - - n - - proxymap",
		"anvil unix - - n - 1 anvil",
		"scache unix - - n - 1 scache",
		"showq unix n - n - - showq",
		"error unix - - n - - error",
		"retry unix - - n - - error",
		"discard unix - - n - - discard",
		"postlog unix-dgram n - n - 1 postlogd",
	}
	for name, lines := range map[string][]string{
		"main.cf":       mainCF,
		"master.cf":     masterCF,
		"header_checks": {"/^/ HOLD"},
	} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// The master daemonizes (even with start-fg, outside a container's
	// PID 1), so it is started and stopped with the postfix command.
	if out, err := exec.Command(bin, "-c", etc, "start").CombinedOutput(); err != nil {
		t.Fatalf("testenv: postfix start: %v\n%s\n%s", err, out, pf.Log())
	}
	t.Cleanup(func() { pf.stop(bin) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := errors.Join(dialable(pf.Addr)(), dialable(pf.ProxyAddr)())
		if err == nil {
			return pf
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: postfix not ready after 30s: %v\n%s", err, pf.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the master with postfix stop and, should that fail, kills
// it by its pid file.
func (pf *Postfix) stop(bin string) {
	if exec.Command(bin, "-c", filepath.Join(pf.dir, "etc"), "stop").Run() == nil {
		return
	}
	b, err := os.ReadFile(filepath.Join(pf.dir, "spool", "pid", "master.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Log returns Postfix's log so far.
func (pf *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(pf.dir, "maillog"))
	return string(b)
}

// Held returns the messages in the hold queue, each as postcat prints its
// envelope, headers and body.
func (pf *Postfix) Held(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(pf.dir, "spool", "hold", "*"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var msgs []string
	for _, f := range files {
		out, err := exec.Command("postcat", "-c", filepath.Join(pf.dir, "etc"), "-e", "-h", "-b", f).CombinedOutput()
		if err != nil {
			t.Fatalf("testenv: postcat %s: %v\n%s", f, err, out)
		}
		msgs = append(msgs, string(out))
	}
	return msgs
}
