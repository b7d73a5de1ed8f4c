package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestReloadProtocolOptions: a protocol's own listener keys (FTP's
// passive_ports) reach it from the mapping and a reload changes them for
// new sessions, without a restart; a session begun before keeps its own.
func TestReloadProtocolOptions(t *testing.T) {
	backend := startFakeFTP(t)
	port, p1, p2 := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	mapFile := filepath.Join(t.TempDir(), "mapping.yml")
	mapping := func(passive int) string {
		return fmt.Sprintf("a.localhost: 127.0.0.1:9\ntcp:\n  - listen: \"127.0.0.1:%d\"\n    protocol: ftp\n    default: f.localhost\n    passive_ports: \"%d\"\n    routes:\n      f.localhost: %s\n",
			port, passive, backend)
	}
	if err := os.WriteFile(mapFile, []byte(mapping(p1)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	rootPEM, err := os.ReadFile(localRootFromLog(t, d.log.String()))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)

	// session logs in over AUTH TLS and returns its EPSV port.
	session := func() (*textproto.Conn, int) {
		t.Helper()
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tp := textproto.NewConn(c)
		want := func(tp *textproto.Conn, code int, cmd string) string {
			t.Helper()
			if cmd != "" {
				tp.PrintfLine("%s", cmd)
			}
			_, msg, err := tp.ReadResponse(code)
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			return msg
		}
		want(tp, 220, "")
		want(tp, 234, "AUTH TLS")
		tc := tls.Client(c, &tls.Config{ServerName: "f.localhost", RootCAs: roots})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tp = textproto.NewConn(tc)
		want(tp, 200, "PBSZ 0")
		want(tp, 200, "PROT P")
		msg := want(tp, 229, "EPSV")
		i, j := strings.Index(msg, "(|||"), strings.LastIndex(msg, "|)")
		p, err := strconv.Atoi(msg[i+4 : j])
		if i < 0 || err != nil {
			t.Fatalf("EPSV reply %q", msg)
		}
		return tp, p
	}
	old, got := session()
	if got != p1 {
		t.Fatalf("EPSV port %d, want passive_ports %d", got, p1)
	}

	if err := os.WriteFile(mapFile, []byte(mapping(p2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "mapping reloaded", 1)
	if _, got := session(); got != p2 {
		t.Errorf("after the reload: EPSV port %d, want %d", got, p2)
	}
	old.PrintfLine("EPSV")
	if _, msg, err := old.ReadResponse(229); err != nil || !strings.Contains(msg, fmt.Sprintf("|||%d|", p1)) {
		t.Errorf("the session begun before the reload: EPSV %q, %v; want port %d", msg, err, p1)
	}
}

// startFakeFTP starts an FTP server that greets, answers EPSV with a port
// nobody listens on (the tests never connect) and everything else 200.
func startFakeFTP(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ServeFake(t, l, time.Minute, nil, func(c net.Conn) {
		io.WriteString(c, "220 fake\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.ToUpper(strings.TrimSpace(line)) {
			case "EPSV":
				io.WriteString(c, "229 Entering Extended Passive Mode (|||9|)\r\n")
			default:
				io.WriteString(c, "200 ok\r\n")
			}
		}
	})
	return l.Addr().String()
}
