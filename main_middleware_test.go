package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestReloadMiddleware changes a host's middleware with SIGHUP: basic auth
// appears, then an IP allow list that leaves the client out; a mapping
// with a plaintext password is refused and the stack before it stays.
func TestReloadMiddleware(t *testing.T) {
	dir := t.TempDir()
	mapFile := filepath.Join(dir, "mapping.yml")
	addr := addrFor(t)
	app := backend(t, "app")
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	stacks := []string{
		"",
		fmt.Sprintf("  middleware:\n    basic_auth:\n      users: {alice: %q}\n", hash),
		fmt.Sprintf("  middleware:\n    ip_allow: [192.0.2.0/24]\n    basic_auth:\n      users: {alice: %q}\n", hash),
		"  middleware:\n    basic_auth:\n      users: {alice: pw}\n", // plaintext: refused
	}
	write := func(i int) {
		t.Helper()
		m := fmt.Sprintf("app.localhost:\n  backend: %s\n%s", app, stacks[i])
		if err := os.WriteFile(mapFile, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	c := clientFor(addr, loadPool(t, localRootFromLog(t, d.log.String())))
	status := func(user string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://app.localhost/", nil)
		if user != "" {
			req.SetBasicAuth(user, "pw")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(""); got != http.StatusOK {
		t.Fatalf("before reload: got %d, want 200", got)
	}
	for i, want := range []struct{ anonymous, alice int }{
		1: {http.StatusUnauthorized, http.StatusOK},
		2: {http.StatusForbidden, http.StatusForbidden},
		3: {http.StatusForbidden, http.StatusForbidden}, // the refused mapping changed nothing
	} {
		if i == 0 {
			continue
		}
		write(i)
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			waitLog(t, d, "reload failed", 1)
			if strings.Contains(d.log.String(), "alice: pw") || strings.Contains(d.log.String(), `"pw"`) {
				t.Errorf("the plaintext password is in the log")
			}
		} else {
			waitLog(t, d, "mapping reloaded", i)
		}
		if got := status(""); got != want.anonymous {
			t.Errorf("stack %d: anonymous got %d, want %d", i, got, want.anonymous)
		}
		if got := status("alice"); got != want.alice {
			t.Errorf("stack %d: alice got %d, want %d", i, got, want.alice)
		}
	}
}
