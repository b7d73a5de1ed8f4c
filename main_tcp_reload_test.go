package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestReloadTCPListenerChanges reloads a tcp listener's mapping: an
// address spelled another way keeps the listener; max_conns and
// idle_timeout changes apply to new sessions; a removed listener drains for
// at most the drain timeout.
func TestReloadTCPListenerChanges(t *testing.T) {
	old := drainTimeout
	drainTimeout = time.Second
	t.Cleanup(func() { drainTimeout = old })

	echo := dbtest.StartEcho(t, "echo", nil)
	port := testenv.FreePort(t)
	mapFile := filepath.Join(t.TempDir(), "mapping.yml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(mapFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	listener := func(listen string, maxConns int, idle string) string {
		return fmt.Sprintf("tcp:\n  - listen: %q\n    protocol: tls\n    default: e.localhost\n    max_conns: %d\n    idle_timeout: %s\n    routes:\n      e.localhost: %s\n",
			listen, maxConns, idle, echo.Addr)
	}
	write("a.localhost: 127.0.0.1:9\n" + listener(fmt.Sprintf(":%d", port), 1, "1h"))
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	rootPEM, err := os.ReadFile(localRootFromLog(t, d.log.String()))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	dial := func() (*tls.Conn, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
			&tls.Config{ServerName: "e.localhost", RootCAs: roots})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	exchange := func(c net.Conn, line string) error {
		got, err := dbtest.ExchangeLine(c, line)
		if err == nil && got != "echo:"+line {
			err = fmt.Errorf("got %q", got)
		}
		return err
	}
	reloads := 0
	reload := func(mapping string) {
		t.Helper()
		write(mapping)
		reloads++
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(d.log.String(), "mapping reloaded")+strings.Count(d.log.String(), "reload failed") < reloads {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d did not finish:\n%s", reloads, d.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := strings.Count(d.log.String(), "reload failed"); n != 0 {
			t.Fatalf("reload %d failed:\n%s", reloads, d.log)
		}
	}

	first, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if err := exchange(first, "one"); err != nil {
		t.Fatalf("first session: %v", err)
	}
	if c, err := dial(); err == nil {
		if exchange(c, "refused") == nil {
			t.Fatal("a second session was served with max_conns 1")
		}
	}

	// The same port spelled as 0.0.0.0, two connections, a short idle
	// timeout: the listener stays and takes the new limits.
	reload("a.localhost: 127.0.0.1:9\n" + listener(fmt.Sprintf("0.0.0.0:%d", port), 2, "300ms"))
	if strings.Contains(d.log.String(), "tcp listener removed") {
		t.Fatalf("a respelled listen address replaced the listener:\n%s", d.log)
	}
	if err := exchange(first, "still"); err != nil {
		t.Fatalf("first session after the reload: %v", err)
	}
	second, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if err := exchange(second, "two"); err != nil {
		t.Fatalf("second session with max_conns 2: %v", err)
	}
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.Copy(io.Discard, second); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the new idle_timeout did not close an idle session")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle session closed after %v, want about 300ms", d)
	}

	// Removed, with a session open: it drains for the drain timeout, then
	// the session is closed.
	reload("a.localhost: 127.0.0.1:9\n")
	waitLog(t, d, "tcp listener drain cut short", 1)
	first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, first); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the session of a removed listener outlived its drain")
	}
}
