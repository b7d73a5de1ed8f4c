package ftp_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// TestPlaintextRefused: before AUTH TLS only FEAT, NOOP and QUIT are
// answered; a login gets 530 and never reaches the backend.
func TestPlaintextRefused(t *testing.T) {
	f := start(t, fixtureOptions{})
	r := f.dialRaw(t)
	r.cmd(530, "USER anonymous")
	r.cmd(530, "PASV")
	r.cmd(200, "NOOP")
	feat := r.cmd(211, "FEAT")
	if want := "AUTH TLS"; !contains(feat, want) {
		t.Errorf("FEAT: got %q, want it to list %q", feat, want)
	}
	r.cmd(221, "QUIT")
}

// TestPipelinedAuthRefused: bytes sent behind AUTH TLS, before the
// handshake, are refused (CVE-2011-0411 class).
func TestPipelinedAuthRefused(t *testing.T) {
	f := start(t, fixtureOptions{})
	r := f.dialRaw(t)
	if _, err := r.conn.Write([]byte("AUTH TLS\r\nUSER anonymous\r\n")); err != nil {
		t.Fatal(err)
	}
	r.want(421)
	if _, err := r.tp.ReadLine(); !errors.Is(err, io.EOF) {
		t.Errorf("after the refusal: got %v, want the connection closed", err)
	}
}

// TestLocalAnswers: commands leproxy answers itself after TLS.
func TestLocalAnswers(t *testing.T) {
	f := start(t, fixtureOptions{})
	r := f.dialRaw(t)
	r.cmd(234, "AUTH TLS")
	tc := tls.Client(r.conn, f.clientTLS())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r = &raw{t: t, conn: tc, tp: newTextproto(tc)}
	r.cmd(230, "USER anonymous") // no_anon_password
	r.cmd(503, "PROT P")         // before PBSZ
	r.cmd(521, "EPSV")           // data not protected yet
	r.cmd(200, "PBSZ 0")
	r.cmd(534, "PROT C")
	r.cmd(536, "PROT E")
	r.cmd(200, "PROT P")
	r.cmd(503, "AUTH TLS")
	r.cmd(534, "CCC")
	r.cmd(502, "REIN")
	r.cmd(502, "PORT 127,0,0,1,100,100")
	r.cmd(502, "EPRT |1|127.0.0.1|25700|")
	r.cmd(500, "P@SW") // vsftpd's PASV alias: not a verb, never relayed
	r.cmd(500, "X\x00YZ")
	r.cmd(522, "EPSV 2") // IPv6 on an IPv4 connection
	r.cmd(257, "PWD")    // relayed to vsftpd
	r.cmd(221, "QUIT")
}

// TestDataFromOtherAddressRefused: a data connection from an address other
// than the control connection's is closed (no data-port theft, no FXP);
// the client's own then works.
func TestDataFromOtherAddressRefused(t *testing.T) {
	f := start(t, fixtureOptions{})
	want := randomData(1<<20, 3)
	f.putFile(t, "f.bin", want)
	r := f.dialRaw(t)
	cfg := f.clientTLS()
	r.login(cfg, true)
	addr := r.epsv()

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: deadline}
	thief, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing the data port from 127.0.0.2: %v", err)
	}
	defer thief.Close()
	thief.SetDeadline(time.Now().Add(deadline))
	if n, err := thief.Read(make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("data connection from 127.0.0.2: read %d bytes, %v; want it closed", n, err)
	}

	got := r.retr(cfg, addr, "RETR pub/f.bin")
	wantSame(t, "download after the refused thief", got, want)
}

// TestDataMustResume: a data connection whose TLS does not resume the
// control connection's session is refused with 522, and the transfer is
// not reported done: a STOR leaves no success behind.
func TestDataMustResume(t *testing.T) {
	f := start(t, fixtureOptions{})
	r := f.dialRaw(t)
	r.login(f.clientTLS(), true)
	addr := r.epsv()
	fresh := f.ca.ClientConfig(host, host) // no session cache: a full handshake
	dc, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	r.cmd(150, "STOR pub/stolen.bin")
	tc := tls.Client(dc, fresh)
	tc.SetDeadline(time.Now().Add(deadline))
	tc.Handshake() // the server's verdict comes after the handshake
	tc.Write([]byte("not stored"))
	r.want(522)
	if fi, err := os.Stat(filepath.Join(f.v.Pub, "stolen.bin")); err == nil && fi.Size() > 0 {
		t.Errorf("stolen.bin has %d bytes on the backend, want none", fi.Size())
	}
	r.cmd(257, "PWD") // the session goes on
}

// TestResumptionPrefer: with passive_resumption: prefer a data connection
// that does a full handshake is accepted.
func TestResumptionPrefer(t *testing.T) {
	f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) { c.Options["passive_resumption"] = "prefer" }})
	want := randomData(1<<16, 4)
	f.putFile(t, "f.bin", want)
	r := f.dialRaw(t)
	r.login(f.clientTLS(), true)
	addr := r.epsv()
	got := r.retr(f.ca.ClientConfig(host, host), addr, "RETR pub/f.bin")
	wantSame(t, "download without resumption", got, want)
}

// TestNoDataConnection: a transfer whose client never opens its data
// connection gets 425, never the backend's 226.
func TestNoDataConnection(t *testing.T) {
	f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) { c.HandshakeTimeout = time.Second }})
	f.putFile(t, "f.bin", []byte("hello"))
	r := f.dialRaw(t)
	r.login(f.clientTLS(), true)
	r.epsv()
	r.cmd(150, "RETR pub/f.bin")
	r.want(425)
	r.cmd(257, "PWD")
}

// TestAbort: ABOR during a download is passed on, and the session goes on.
func TestAbort(t *testing.T) {
	f := start(t, fixtureOptions{})
	f.putFile(t, "big.bin", randomData(bigSize, 5))
	r := f.dialRaw(t)
	cfg := f.clientTLS()
	r.login(cfg, true)
	addr := r.epsv()
	dc, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	r.cmd(150, "RETR pub/big.bin")
	tc := tls.Client(dc, cfg)
	tc.SetDeadline(time.Now().Add(deadline))
	if _, err := io.ReadFull(tc, make([]byte, 1000)); err != nil {
		t.Fatalf("reading the start of the download: %v", err)
	}
	if err := r.tp.PrintfLine("ABOR"); err != nil {
		t.Fatal(err)
	}
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil || code != 426 && code != 226 && code != 225 {
		t.Fatalf("after ABOR: %d %q %v, want 426 or 22x", code, msg, err)
	}
	if code == 426 {
		if code, msg, err := r.tp.ReadResponse(0); err != nil || code != 225 && code != 226 {
			t.Fatalf("ABOR's reply: %d %q %v, want 225 or 226", code, msg, err)
		}
	}
	r.cmd(257, "PWD")
}

// TestNoRoute: a server name with no route gets 421 in FTP words.
func TestNoRoute(t *testing.T) {
	f := start(t, fixtureOptions{proto: "ftps"})
	c := f.p.Dial(t)
	tc := tls.Client(c, f.ca.ClientConfig("other.test", host))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := &raw{t: t, conn: tc, tp: newTextproto(tc)}
	msg := r.want(421)
	if !contains(msg, "other.test") {
		t.Errorf("refusal %q does not name the server name", msg)
	}
}

// TestBackendDown: a backend that cannot be reached gets the client 421
// after its TLS handshake, and the session ends unreachable.
func TestBackendDown(t *testing.T) {
	for _, proto := range []string{"ftp", "ftps"} {
		t.Run(proto, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			p := dbtest.StartProtocol(t, ca, proto, host, dbproxy.Route{Host: host, Backend: dbtest.ClosedAddr(t)})
			c := p.Dial(t)
			tp := newTextproto(c)
			if proto == "ftp" {
				if code, msg, err := tp.ReadResponse(220); err != nil {
					t.Fatalf("greeting: %d %q %v", code, msg, err)
				}
				tp.PrintfLine("AUTH TLS")
				if code, msg, err := tp.ReadResponse(234); err != nil {
					t.Fatalf("AUTH TLS: %d %q %v", code, msg, err)
				}
			}
			tc := tls.Client(c, ca.ClientConfig(host, host))
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			if code, msg, err := newTextproto(tc).ReadResponse(421); err != nil {
				t.Fatalf("got %d %q %v, want 421", code, msg, err)
			}
			p.SessionError(t)
			if rec := p.SessionEnds(t)[0]; rec["reason"] != dbproxy.ReasonUnreachable {
				t.Errorf("session end reason %v, want %s", rec["reason"], dbproxy.ReasonUnreachable)
			}
		})
	}
}

// TestPassiveAddress: PASV advertises passive_address and a port of
// passive_ports; the data connection then reaches leproxy on the address
// the client used.
func TestPassiveAddress(t *testing.T) {
	var port string
	f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) {
		c.Options["passive_address"] = "203.0.113.7"
		port = c.Options["passive_ports"]
	}})
	f.putFile(t, "f.bin", []byte("hello"))
	r := f.dialRaw(t)
	cfg := f.clientTLS()
	r.login(cfg, true)
	msg := r.cmd(227, "PASV")
	p, _ := strconv.Atoi(port)
	if want := fmt.Sprintf("(203,0,113,7,%d,%d)", p>>8, p&0xff); !strings.Contains(msg, want) {
		t.Fatalf("PASV reply %q, want %s", msg, want)
	}
	got := r.retr(cfg, net.JoinHostPort("127.0.0.1", port), "RETR pub/f.bin")
	wantSame(t, "download", got, []byte("hello"))
}

// TestNoFreeDataPort: when every port of passive_ports is taken the
// client gets 425 and the session goes on.
func TestNoFreeDataPort(t *testing.T) {
	var port string
	f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) { port = c.Options["passive_ports"] }})
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := f.dialRaw(t)
	r.login(f.clientTLS(), true)
	r.cmd(425, "EPSV")
	r.cmd(257, "PWD")
}
