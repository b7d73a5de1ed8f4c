package sdnotify

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listen opens a datagram socket at name (a path or an @abstract name),
// points NOTIFY_SOCKET at it and returns it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listening on %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// receive returns the next datagram on conn.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	// A generous bound so that a missing message fails instead of hanging.
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("receiving: %v", err)
	}
	return string(buf[:n])
}

func abstractName(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "@leproxy-sdnotify-test-" + hex.EncodeToString(b[:])
}

func TestSequence(t *testing.T) {
	for _, kind := range []string{"path", "abstract"} {
		t.Run(kind, func(t *testing.T) {
			name := filepath.Join(t.TempDir(), "notify.sock")
			if kind == "abstract" {
				if runtime.GOOS != "linux" {
					t.Skip("abstract unix sockets are Linux only")
				}
				name = abstractName(t)
			}
			conn := listen(t, name)
			n := New()
			if n == nil {
				t.Fatal("New returned nil with NOTIFY_SOCKET set")
			}

			if err := n.Ready(); err != nil {
				t.Fatalf("Ready: %v", err)
			}
			before, err := monotonicUsec()
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Reloading(); err != nil {
				t.Fatalf("Reloading: %v", err)
			}
			after, err := monotonicUsec()
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Status("reloaded\nmapping.yml"); err != nil {
				t.Fatalf("Status: %v", err)
			}
			if err := n.Ready(); err != nil {
				t.Fatalf("Ready: %v", err)
			}
			if err := n.Stopping(); err != nil {
				t.Fatalf("Stopping: %v", err)
			}
			if err := n.Send("STATUS=a\nERRNO=0"); err != nil {
				t.Fatalf("Send: %v", err)
			}

			if got, want := receive(t, conn), "READY=1"; got != want {
				t.Errorf("message 1: got %q, want %q", got, want)
			}
			reloading := receive(t, conn)
			usec, ok := strings.CutPrefix(reloading, "RELOADING=1\nMONOTONIC_USEC=")
			if !ok {
				t.Errorf("message 2: got %q, want RELOADING=1\\nMONOTONIC_USEC=<µs>", reloading)
			} else if v, err := strconv.ParseUint(usec, 10, 64); err != nil {
				t.Errorf("message 2: MONOTONIC_USEC %q: %v", usec, err)
			} else if v < before || v > after {
				t.Errorf("message 2: MONOTONIC_USEC %d outside the clock readings around the call [%d, %d]", v, before, after)
			}
			for i, want := range []string{"STATUS=reloaded mapping.yml", "READY=1", "STOPPING=1", "STATUS=a\nERRNO=0"} {
				if got := receive(t, conn); got != want {
					t.Errorf("message %d: got %q, want %q", i+3, got, want)
				}
			}
		})
	}
}

func TestUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := New()
	if n != nil {
		t.Fatalf("New with NOTIFY_SOCKET empty: got %+v, want nil", n)
	}
	for _, n := range []*Notifier{nil, {}} {
		for name, send := range map[string]func() error{
			"Ready":     n.Ready,
			"Reloading": n.Reloading,
			"Stopping":  n.Stopping,
			"Status":    func() error { return n.Status("x") },
			"Send":      func() error { return n.Send("X=1") },
		} {
			if err := send(); err != nil {
				t.Errorf("%s on %#v: got error %v, want nil", name, n, err)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, socket, want string
	}{
		{"relative path", "notify.sock", "unsupported NOTIFY_SOCKET"},
		{"vsock", "vsock:2:1234", "unsupported NOTIFY_SOCKET"},
		{"missing socket", filepath.Join(t.TempDir(), "missing.sock"), "connecting to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			err := New().Ready()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "sdnotify: ") {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
	t.Run("missing socket is ENOENT", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
		if err := New().Ready(); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("got error %v, want ENOENT", err)
		}
	})
}
