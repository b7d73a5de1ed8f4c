package smtp

import (
	"crypto/tls"
	"net/smtp"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// Postfix, the real MTA, behind leproxy: it accepts every message from
// 127.0.0.0/8 and holds it, and the test reads it back with postcat.

// wantHeld checks that pf holds exactly one message, with every one of
// wants in what postcat prints of it.
func wantHeld(t *testing.T, pf *testenv.Postfix, wants ...string) {
	t.Helper()
	var held []string
	dbtest.WaitFor(t, "Postfix to hold the message", func() bool {
		held = pf.Held(t)
		return len(held) > 0
	})
	if len(held) != 1 {
		t.Fatalf("Postfix holds %d messages, want 1", len(held))
	}
	for _, w := range wants {
		if !strings.Contains(held[0], w) {
			t.Errorf("held message lacks %q:\n%s", w, held[0])
		}
	}
}

// TestSwaksPostfix delivers with swaks --tls through leproxy to a
// plaintext Postfix.
func TestSwaksPostfix(t *testing.T) {
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{})
	ca := dbtest.NewCA(t)
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: pf.Addr})
	out, err := swaks(t, p, writeCA(t, ca), "--tls")
	if err != nil {
		t.Fatalf("swaks --tls: %v\n%s", err, out)
	}
	if !strings.Contains(out, "<~  250 2.0.0 Ok: queued as") { // <~: read over TLS
		t.Errorf("swaks transcript lacks Postfix's queue id:\n%s", out)
	}
	wantHeld(t, pf, "sender: sender@client.test", "recipient: rcpt@backend.test",
		"Subject: through leproxy", "first line\n.dot line\nlast line")
}

// TestPostfixSTARTTLSBackend sends with net/smtp through a route with
// tls: verify: leproxy upgrades its link to Postfix with STARTTLS, which
// Postfix logs.
func TestPostfixSTARTTLSBackend(t *testing.T) {
	ca := dbtest.NewCA(t)
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: pf.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool})
	c := netClient(t, p, "mail.test")
	if err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool}); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("Postfix's EHLO reply after TLS still offers STARTTLS")
	}
	sendPlain(t, c, "from@client.test", "to@remote.test", "to Postfix over TLS")
	wantHeld(t, pf, "to Postfix over TLS")
	if log := pf.Log(); !strings.Contains(log, "TLS connection established from unknown[127.0.0.1]") {
		t.Errorf("Postfix logged no TLS connection:\n%s", log)
	}
}

// TestPostfixProxyProtocol checks that Postfix, with
// smtpd_upstream_proxy_protocol = haproxy, logs the client's own address
// and port from leproxy's PROXY header, in both versions.
func TestPostfixProxyProtocol(t *testing.T) {
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{})
	for _, v := range []dbproxy.ProxyVersion{dbproxy.ProxyV1, dbproxy.ProxyV2} {
		ca := dbtest.NewCA(t)
		p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: pf.ProxyAddr, ProxyProtocol: v})
		conn := p.Dial(t)
		c, err := smtp.NewClient(conn, "mail.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool}); err != nil {
			t.Fatalf("%s: STARTTLS: %v", v, err)
		}
		sendPlain(t, c, "from@client.test", "to@remote.test", "with PROXY "+string(v))
		client := strings.Replace(conn.LocalAddr().String(), "127.0.0.1:", "unknown[127.0.0.1]:", 1)
		dbtest.WaitFor(t, "Postfix to log the session", func() bool { return strings.Contains(pf.Log(), "disconnect from "+client) })
		if log := pf.Log(); !strings.Contains(log, "connect from "+client) {
			t.Errorf("%s: Postfix did not log the client %s:\n%s", v, client, log)
		}
	}
}

// sendPlain sends one message over c without authentication.
func sendPlain(t *testing.T, c *smtp.Client, from, to, body string) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write([]byte("Subject: test\r\n\r\n" + body + "\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
}
