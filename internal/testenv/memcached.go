package testenv

// memcached for integration tests.

import (
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Memcached is a running throwaway memcached.
type Memcached struct {
	Addr string // 127.0.0.1:port, TCP, text and binary protocols
	Port int

	proc *process
}

// StartMemcached starts memcached on a free 127.0.0.1 TCP port (UDP off,
// 64 MB) and stops it when the test ends. Run as root, it runs as the
// memcache user, as memcached requires. Without memcached the test is
// skipped (memcached package).
func StartMemcached(t testing.TB) *Memcached {
	t.Helper()
	bin := LookBinary(t, "memcached", "memcached")
	port := FreePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if serviceUser(t, "memcache", "memcached") != nil {
		args = append(args, "-u", "memcache")
	}
	m := &Memcached{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	m.proc = startProcess(t, "memcached", exec.Command(bin, args...))
	m.proc.waitReady(t, 20*time.Second, dialable(m.Addr))
	return m
}

// Stop stops the server; it runs at the end of the test anyway. Tests
// call it to make a backend go down.
func (m *Memcached) Stop() { m.proc.stop() }
