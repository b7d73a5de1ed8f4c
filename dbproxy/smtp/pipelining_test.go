package smtp

import (
	"bufio"
	"crypto/tls"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// CVE-2011-0411: a man in the middle appends commands to the client's
// STARTTLS, in plaintext; a server that reads them after TLS runs them as
// the client's. leproxy must refuse them and the backend never see them.

// plainClient greets, sends EHLO and returns the reader.
func plainClient(t *testing.T, p *dbtest.Proxy) (*bufio.Reader, func(string)) {
	t.Helper()
	c := p.Dial(t)
	br := bufio.NewReader(c)
	write := func(s string) { dbtest.MustWrite(t, c, []byte(s)) }
	if _, err := expect(br, 220); err != nil {
		t.Fatal(err)
	}
	write("EHLO client.test\r\n")
	if _, err := expect(br, 250); err != nil {
		t.Fatal(err)
	}
	return br, write
}

// TestPipelinedAfterSTARTTLS sends STARTTLS with a command behind it in
// one write: leproxy must answer 421, not 220, close, and never connect
// the backend.
func TestPipelinedAfterSTARTTLS(t *testing.T) {
	for _, injected := range []string{"RSET\r\n", "MAIL FROM:<evil@attacker.test>\r\n", "x"} {
		t.Run(strings.TrimSpace(injected), func(t *testing.T) {
			ms := startMailServer(t, "backend", mailOptions{})
			p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr})
			br, write := plainClient(t, p)
			write("STARTTLS\r\n" + injected)
			rp, err := readReply(br)
			if err != nil || rp.code != 421 || !strings.Contains(rp.lines[0], "pipelined after STARTTLS") {
				t.Fatalf("STARTTLS with %q behind it: got %v, %v; want 421 about pipelining", injected, rp, err)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after the 421: %q, %v; want the close", rest, err)
			}
			if e := p.SessionError(t); !strings.Contains(e, "unencrypted data after STARTTLS") {
				t.Errorf("session end error %q", e)
			}
			if n := len(ms.sessions()); n != 0 {
				t.Errorf("the backend had %d sessions, want none", n)
			}
		})
	}
}

// TestPlaintextAfterSTARTTLSReply sends a plaintext command after
// leproxy's 220 to STARTTLS, where the ClientHello belongs: the TLS
// handshake fails and the backend sees nothing.
func TestPlaintextAfterSTARTTLSReply(t *testing.T) {
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr})
	br, write := plainClient(t, p)
	write("STARTTLS\r\n")
	if _, err := expect(br, 220); err != nil {
		t.Fatal(err)
	}
	write("RSET\r\nMAIL FROM:<evil@attacker.test>\r\n")
	if e := p.SessionError(t); !strings.Contains(e, "TLS handshake") {
		t.Errorf("session end error %q, want a failed TLS handshake", e)
	}
	if n := len(ms.sessions()); n != 0 {
		t.Errorf("the backend had %d sessions, want none", n)
	}
}

// TestSecondSTARTTLS checks that STARTTLS inside TLS is refused by
// leproxy itself, before the backend is connected, and that the session
// then goes on with the client's EHLO.
func TestSecondSTARTTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr})
	c := p.Dial(t)
	br := bufio.NewReader(c)
	if _, err := expect(br, 220); err != nil {
		t.Fatal(err)
	}
	if _, err := command(c, br, "STARTTLS", 220); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, ca.ClientConfig("mail.test", "mail.test"))
	br = bufio.NewReader(tc)
	rp, err := command(tc, br, "STARTTLS", 503)
	if err != nil || rp.lines[0] != "5.5.1 Error: TLS already active" {
		t.Fatalf("STARTTLS inside TLS: %v, %v; want 503 5.5.1 Error: TLS already active", rp, err)
	}
	if n := len(ms.sessions()); n != 0 {
		t.Errorf("the backend had %d sessions before the client's EHLO, want none", n)
	}
	if rp, err = command(tc, br, "EHLO client.test", 250); err != nil || !slices.Contains(rp.lines, "AUTH PLAIN") {
		t.Fatalf("EHLO: %v, %v; want the backend's 250", rp, err)
	}
	if strings.Contains(ms.debug(), "STARTTLS") {
		t.Errorf("the backend saw STARTTLS:\n%s", ms.debug())
	}
}
