package smtp

import (
	"context"
	"crypto/tls"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// swaks runs swaks against the proxy with args after the connection and
// message options, and returns its transcript and error.
func swaks(t *testing.T, p *dbtest.Proxy, caFile string, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Swaks(t)
	host, port, _ := net.SplitHostPort(p.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{
		"--server", host, "--port", port,
		"--tls-verify", "--tls-ca-path", caFile,
		"--ehlo", "client.test",
		"--from", "sender@client.test", "--to", "rcpt@backend.test",
		"--header", "Subject: through leproxy",
		"--body", "first line\n.dot line\nlast line",
		"--timeout", "20",
	}, args...)
	out, err := exec.CommandContext(ctx, bin, all...).CombinedOutput()
	return string(out), err
}

// swaksAuth are swaks's options for AUTH PLAIN as testUser.
var swaksAuth = []string{"--auth", "PLAIN", "--auth-user", testUser, "--auth-password", testPassword}

func writeCA(t *testing.T, ca *dbtest.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSwaksSTARTTLS delivers a message with swaks --tls (STARTTLS,
// certificate verified, AUTH PLAIN after TLS) through leproxy to a
// plaintext go-smtp backend: by the default route without SNI, and by
// another route with --tls-sni.
func TestSwaksSTARTTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	def, other := startMailServer(t, "default.backend", mailOptions{}), startMailServer(t, "other.backend", mailOptions{})
	p := startSMTP(t, ca, "smtp",
		dbproxy.Route{Host: "mail.test", Backend: def.Addr},
		dbproxy.Route{Host: "other.test", Backend: other.Addr})
	caFile := writeCA(t, ca)

	out, err := swaks(t, p, caFile, append(swaksAuth, "--tls")...)
	if err != nil {
		t.Fatalf("swaks --tls: %v\n%s", err, out)
	}
	if !strings.Contains(out, "250-AUTH PLAIN") || !strings.Contains(out, "235 ") {
		t.Errorf("swaks transcript lacks the backend's AUTH PLAIN and its 235:\n%s", out)
	}
	wantMail(t, def, "sender@client.test", "rcpt@backend.test", "first line\r\n.dot line\r\nlast line\r\n")

	out, err = swaks(t, p, caFile, append(swaksAuth, "--tls", "--tls-sni", "other.test")...)
	if err != nil {
		t.Fatalf("swaks --tls --tls-sni other.test: %v\n%s", err, out)
	}
	wantMail(t, other, "sender@client.test", "rcpt@backend.test", "Subject: through leproxy")
	if n := len(def.mails()); n != 1 {
		t.Errorf("the default backend has %d messages, want 1", n)
	}
}

// TestSwaksRefusals checks what swaks sees of leproxy's refusals: a
// certificate from another CA fails verification; without STARTTLS AUTH
// is not offered and MAIL is refused with 530; nothing reaches the
// backend.
func TestSwaksRefusals(t *testing.T) {
	ca := dbtest.NewCA(t)
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr})

	out, err := swaks(t, p, writeCA(t, dbtest.NewCA(t)), append(swaksAuth, "--tls")...)
	if err == nil {
		t.Errorf("swaks verified leproxy's certificate with another CA:\n%s", out)
	}
	out, err = swaks(t, p, writeCA(t, ca), swaksAuth...)
	if err == nil || !strings.Contains(out, "Host did not advertise authentication") {
		t.Errorf("swaks AUTH without TLS: %v\n%s\nwant no AUTH offered", err, out)
	}
	out, err = swaks(t, p, writeCA(t, ca))
	if err == nil || !strings.Contains(out, "<** 530 5.7.0 Must issue a STARTTLS command first") {
		t.Errorf("swaks without TLS: %v\n%s\nwant MAIL refused with 530", err, out)
	}
	if n := len(ms.sessions()); n != 0 {
		t.Errorf("the backend had %d sessions, want none", n)
	}
}

// TestSwaksSMTPS delivers with swaks --tls-on-connect through an smtps
// listener, to a plaintext backend and to an implicit-TLS backend
// (tls: verify).
func TestSwaksSMTPS(t *testing.T) {
	ca := dbtest.NewCA(t)
	bcert, _, _ := ca.Issue(t, "127.0.0.1")
	plain := startMailServer(t, "plain.backend", mailOptions{})
	tlsBackend := startMailServer(t, "tls.backend", mailOptions{implicit: &tls.Config{Certificates: []tls.Certificate{bcert}}})
	p := startSMTP(t, ca, "smtps",
		dbproxy.Route{Host: "mail.test", Backend: plain.Addr},
		dbproxy.Route{Host: "secure.test", Backend: tlsBackend.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool})
	caFile := writeCA(t, ca)

	out, err := swaks(t, p, caFile, append(swaksAuth, "--tls-on-connect")...)
	if err != nil {
		t.Fatalf("swaks --tls-on-connect: %v\n%s", err, out)
	}
	wantMail(t, plain, "sender@client.test", "rcpt@backend.test", "first line\r\n.dot line\r\nlast line\r\n")

	out, err = swaks(t, p, caFile, append(swaksAuth, "--tls-on-connect", "--tls-sni", "secure.test")...)
	if err != nil {
		t.Fatalf("swaks --tls-on-connect --tls-sni secure.test: %v\n%s", err, out)
	}
	wantMail(t, tlsBackend, "sender@client.test", "rcpt@backend.test", "last line")
}

// TestNetSMTPImplicitTLS sends with net/smtp over a TLS connection
// (implicit TLS) routed by its server name, and checks that the greeting
// names the route.
func TestNetSMTPImplicitTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	a, b := startMailServer(t, "a.backend", mailOptions{}), startMailServer(t, "b.backend", mailOptions{})
	p := startSMTP(t, ca, "smtps",
		dbproxy.Route{Host: "a.test", Backend: a.Addr},
		dbproxy.Route{Host: "b.test", Backend: b.Addr})
	tc := tls.Client(p.Dial(t), &tls.Config{ServerName: "b.test", RootCAs: ca.Pool})
	c, err := smtp.NewClient(tc, "b.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("the EHLO reply on implicit TLS offers STARTTLS")
	}
	send(t, c, "b.test", "from@client.test", "to@b.test", "implicit")
	wantMail(t, b, "from@client.test", "to@b.test", "implicit")
	if n := len(a.mails()); n != 0 {
		t.Errorf("route a's backend got %d messages", n)
	}
}
