package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdNotifyOrder runs leproxy with $NOTIFY_SOCKET set and checks
// the messages systemd would see: READY=1 once serving, RELOADING=1 with
// MONOTONIC_USEC then READY=1 around a reload, STOPPING=1 at the end.
func TestSystemdNotifyOrder(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no sd_notify message within 20s")
			return ""
		}
	}

	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.localhost: 127.0.0.1:9\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	if m := next(); m != "READY=1" {
		t.Fatalf("first message %q, want READY=1", m)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if m := next(); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("after SIGHUP got %q, want RELOADING=1 with MONOTONIC_USEC", m)
	}
	if m := next(); !strings.HasPrefix(m, "STATUS=") {
		t.Fatalf("after reloading got %q, want STATUS=", m)
	}
	if m := next(); m != "READY=1" {
		t.Fatalf("after reload got %q, want READY=1", m)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if m := next(); m != "STOPPING=1" {
		t.Fatalf("at stop got %q, want STOPPING=1", m)
	}
}
