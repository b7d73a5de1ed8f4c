package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Ports for servers a test starts come from below the kernel's ephemeral
// range (Linux: 32768–60999). A port probed with ":0" and closed comes from
// that range, so the next outgoing connection of any process, or another
// test's ":0" probe, can take it before the server binds it — CI saw
// "address already in use" that way. Below the range only other tests pick
// ports, and they reserve each one with an flock held until the test
// process exits, so two test binaries running in parallel never pick the
// same port.
const (
	portLow  = 20000
	portHigh = 32767
)

var reserved struct {
	sync.Mutex
	ports map[int]*os.File // the lock files, kept open for the process's life
}

// FreePort returns a TCP port on 127.0.0.1 that no other test process has
// reserved and that was free for TCP and UDP when it was reserved.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := reservePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return port
}

// reservePort picks a free port in [portLow, portHigh] and locks it for the
// rest of this process.
func reservePort() (int, error) {
	dir := filepath.Join(os.TempDir(), "leproxy-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("reserving a port: %w", err)
	}
	reserved.Lock()
	defer reserved.Unlock()
	if reserved.ports == nil {
		reserved.ports = make(map[int]*os.File)
	}
	span := portHigh - portLow + 1
	start := rand.IntN(span)
	for i := range span {
		port := portLow + (start+i)%span
		if reserved.ports[port] != nil {
			continue
		}
		f, err := lockPortFile(filepath.Join(dir, strconv.Itoa(port)))
		if err != nil {
			continue // another test process has it
		}
		if !bindable(port) {
			f.Close() // something outside the tests uses it; leave it
			continue
		}
		reserved.ports[port] = f
		return port, nil
	}
	return 0, errors.New("reserving a port: every port in 20000–32767 is taken")
}

func lockPortFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// bindable reports whether port is free for TCP and UDP on 127.0.0.1 (Pebble's
// DNS server needs both).
func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
