package smtp

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// TestCommandsBeforeTLS checks leproxy's own answers before STARTTLS.
func TestCommandsBeforeTLS(t *testing.T) {
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: dbtest.ClosedAddr(t)})
	c := p.Dial(t)
	br := bufio.NewReader(c)
	if rp, err := expect(br, 220); err != nil || rp.lines[0] != "mail.test ESMTP leproxy" {
		t.Fatalf("greeting %v, %v", rp, err)
	}
	for _, tt := range []struct {
		cmd  string
		code int
		text string
	}{
		{"EHLO", 501, "5.5.4 Syntax: EHLO hostname"},
		{"HELO client.test", 250, "mail.test"},
		{"ehlo client.test", 250, "mail.test"},
		{"NOOP", 250, "2.0.0 OK"},
		{"RSET", 250, "2.0.0 OK"},
		{"STARTTLS now", 501, "5.5.4 Syntax: STARTTLS"},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", 530, "5.7.0 Must issue a STARTTLS command first"},
		{"VRFY root", 530, "5.7.0 Must issue a STARTTLS command first"},
		{"QUIT", 221, "2.0.0 mail.test closing connection"},
	} {
		rp, err := command(c, br, tt.cmd, tt.code)
		if err != nil || rp.lines[0] != tt.text {
			t.Errorf("%s: %v, %v; want %d %s", tt.cmd, rp, err, tt.code, tt.text)
		}
	}
	if rest, err := dbtest.ReadAll(t, c); err != nil || rest != "" {
		t.Errorf("after QUIT: %q, %v; want the close", rest, err)
	}
	// A session the protocol completed itself is counted, not logged.
	dbtest.WaitFor(t, "the session to count as handled", func() bool { return p.Srv.Stats().Handled == 1 })
}

// TestCommandLimits checks the bounds on what leproxy reads before TLS: a
// long line, and a client that never starts TLS.
func TestCommandLimits(t *testing.T) {
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: dbtest.ClosedAddr(t)})
	c := p.Dial(t)
	br := bufio.NewReader(c)
	expect(br, 220)
	if rp, err := command(c, br, "EHLO "+strings.Repeat("x", 2*maxLineLen), 500); err != nil || rp.lines[0] != "5.5.2 leproxy: line too long" {
		t.Errorf("long line: %v, %v; want 500 5.5.2", rp, err)
	}
	if rest, _ := dbtest.ReadAll(t, c); rest != "" {
		t.Errorf("after the 500: %q, want the close", rest)
	}

	c = p.Dial(t)
	br = bufio.NewReader(c)
	expect(br, 220)
	for range maxCommands {
		dbtest.MustWrite(t, c, []byte("NOOP\r\n"))
	}
	for range maxCommands {
		if _, err := expect(br, 250); err != nil {
			t.Fatal(err)
		}
	}
	if rp, err := expect(br, 421); err != nil || !strings.Contains(rp.lines[0], "too many commands") {
		t.Errorf("after %d commands: %v, %v; want 421 too many commands", maxCommands, rp, err)
	}
}

// TestHandshakeTimeoutReply checks that a client silent after the greeting
// is told 421 4.4.2 when the handshake deadline passes, before the close.
func TestHandshakeTimeoutReply(t *testing.T) {
	proto, _ := dbproxy.Lookup("smtp")
	p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{
		Protocol:         proto,
		Routes:           []dbproxy.Route{{Host: "mail.test", Backend: dbtest.ClosedAddr(t)}},
		HandshakeTimeout: time.Second, // the greeting goes out well before it, even on a loaded machine
	})
	c := p.Dial(t)
	br := bufio.NewReader(c)
	if _, err := expect(br, 220); err != nil {
		t.Fatal(err)
	}
	if rp, err := expect(br, 421); err != nil || rp.lines[0] != "4.4.2 mail.test leproxy: timeout, closing connection" {
		t.Errorf("after the deadline: %v, %v; want 421 4.4.2", rp, err)
	}
	if e := p.SessionError(t); !strings.Contains(e, "timeout") {
		t.Errorf("session end error %q", e)
	}
}
