package smtp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// netClient dials the proxy with net/smtp as host, the name it uses for
// TLS (SNI, verification) and PLAIN authentication.
func netClient(t *testing.T, p *dbtest.Proxy, host string) *smtp.Client {
	t.Helper()
	c, err := smtp.NewClient(p.Dial(t), host)
	if err != nil {
		t.Fatalf("net/smtp: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send sends one message over c, authenticated as testUser.
func send(t *testing.T, c *smtp.Client, host, from, to, body string) {
	t.Helper()
	if err := c.Auth(smtp.PlainAuth("", testUser, testPassword, host)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
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

// wantReply checks that err is the server's reply code and msg.
func wantReply(t *testing.T, err error, code int, msg string) {
	t.Helper()
	te, ok := errors.AsType[*textproto.Error](err)
	if !ok || te.Code != code || te.Msg != msg {
		t.Errorf("got %v, want the reply %d %s", err, code, msg)
	}
}

// TestNetSMTPRoutesByServerName sends mail with net/smtp through STARTTLS
// to each of two routes by its server name, with AUTH PLAIN after TLS,
// and checks that each backend got its own message intact and nothing
// else.
func TestNetSMTPRoutesByServerName(t *testing.T) {
	ca := dbtest.NewCA(t)
	a, b := startMailServer(t, "a.backend", mailOptions{}), startMailServer(t, "b.backend", mailOptions{})
	p := startSMTP(t, ca, "smtp",
		dbproxy.Route{Host: "a.test", Backend: a.Addr},
		dbproxy.Route{Host: "b.test", Backend: b.Addr})
	for _, tt := range []struct {
		host string
		ms   *mailServer
	}{{"b.test", b}, {"a.test", a}} {
		c := netClient(t, p, tt.host)
		if err := c.StartTLS(&tls.Config{ServerName: tt.host, RootCAs: ca.Pool}); err != nil {
			t.Fatalf("STARTTLS to %s: %v", tt.host, err)
		}
		send(t, c, tt.host, "from@client.test", "to@"+tt.host, "hello "+tt.host+"\r\n.leading dot\r\nend")
		wantMail(t, tt.ms, "from@client.test", "to@"+tt.host, "hello "+tt.host+"\r\n.leading dot\r\nend\r\n")
	}
	dbtest.WaitFor(t, "two session-end lines", func() bool { return len(p.SessionEnds(t)) == 2 })
	for _, rec := range p.SessionEnds(t) {
		// Not the error: the client's close and leproxy's half-close of
		// the client side may cross, and then the pump sees a reset.
		if rec["ehlo"] != "localhost" {
			t.Errorf("session end %v, want ehlo localhost (net/smtp's)", rec)
		}
	}
}

// TestNetSMTPPlaintextAllowed sends a message with net/smtp without TLS
// through a default route that allows plaintext: MAIL connects the backend,
// which gets the client's EHLO first.
func TestNetSMTPPlaintextAllowed(t *testing.T) {
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr, AllowPlaintext: true})
	c := netClient(t, p, "mail.test")
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("from@client.test"); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt("to@backend.test"); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	w.Write([]byte("Subject: plain\r\n\r\nin the clear\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	c.Quit()
	msgs := ms.mails()
	if len(msgs) != 1 || msgs[0].from != "from@client.test" || !strings.Contains(msgs[0].data, "in the clear") {
		t.Fatalf("backend got %+v, want the message", msgs)
	}
	if d := ms.debug(); !strings.Contains(d, "EHLO client.test") {
		t.Errorf("the backend did not get the client's EHLO:\n%s", d)
	}
}

// TestBackendExtensionsReplayed checks that the client's EHLO after TLS is
// answered by the backend itself: AUTH, which leproxy's own EHLO list
// before TLS lacks and a TLS backend offers only after its own STARTTLS,
// is offered, STARTTLS is not; that the backend link was upgraded (the
// backend saw STARTTLS) and that the second client's EHLO before TLS
// offers the SIZE the backend announced, learnt from the first session.
func TestBackendExtensionsReplayed(t *testing.T) {
	ca := dbtest.NewCA(t)
	bcert, _, _ := ca.Issue(t, "127.0.0.1")
	ms := startMailServer(t, "real.backend", mailOptions{starttls: &tls.Config{Certificates: []tls.Certificate{bcert}}})
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool})

	c := netClient(t, p, "mail.test")
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("leproxy's EHLO list before TLS offers AUTH")
	}
	if ok, _ := c.Extension("SIZE"); ok {
		t.Error("leproxy's EHLO list offers SIZE before any session reached the backend")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("leproxy's EHLO list does not offer STARTTLS")
	}
	if err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool}); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
		t.Errorf("EHLO after TLS: AUTH %t %q, want the backend's AUTH PLAIN", ok, mechs)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("EHLO after TLS offers STARTTLS")
	}
	if !strings.Contains(ms.debug(), "STARTTLS") {
		t.Error("the backend never saw STARTTLS: the backend link was not upgraded")
	}
	send(t, c, "mail.test", "from@client.test", "to@backend.test", "over TLS both ways")
	wantMail(t, ms, "from@client.test", "to@backend.test", "over TLS both ways")

	c2 := netClient(t, p, "mail.test")
	if err := c2.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, size := c2.Extension("SIZE"); !ok || size != "1048576" {
		t.Errorf("EHLO before TLS after a session: SIZE %t %q, want the backend's 1048576", ok, size)
	}
	if ok, _ := c2.Extension("AUTH"); ok {
		t.Error("leproxy's EHLO list before TLS offers AUTH")
	}
}

// TestMustIssueSTARTTLSFirst checks that MAIL before STARTTLS is refused
// with 530 and never reaches the backend.
func TestMustIssueSTARTTLSFirst(t *testing.T) {
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr})
	c := netClient(t, p, "mail.test")
	wantReply(t, c.Mail("from@client.test"), 530, "5.7.0 Must issue a STARTTLS command first")
	c.Close()
	if e := p.SessionError(t); !strings.Contains(e, "TLS is required") {
		t.Errorf("session end error %q, want TLS is required", e)
	}
	if n := len(ms.sessions()); n != 0 {
		t.Errorf("the backend had %d sessions, want none", n)
	}
}

// TestBackendDown checks the 421 a client reads when the route's backend
// does not answer, and the session-end line's reason.
func TestBackendDown(t *testing.T) {
	p := startSMTP(t, dbtest.NewCA(t), "smtp", dbproxy.Route{Host: "mail.test", Backend: dbtest.ClosedAddr(t)})
	c := netClient(t, p, "mail.test")
	err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: p.CA.Pool})
	wantReply(t, err, 421, "4.4.1 mail.test leproxy: could not connect to the backend of mail.test")
	p.SessionError(t)
	if rec := p.SessionEnds(t)[0]; rec["reason"] != dbproxy.ReasonUnreachable {
		t.Errorf("session end reason %v, want %s", rec["reason"], dbproxy.ReasonUnreachable)
	}
}

// TestBackendWithoutSTARTTLS checks that a route with tls: verify to a
// backend that offers no STARTTLS is refused, never sent the client's
// session in plaintext.
func TestBackendWithoutSTARTTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	ms := startMailServer(t, "backend", mailOptions{})
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool})
	c := netClient(t, p, "mail.test")
	err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool})
	wantReply(t, err, 421, "4.4.1 mail.test leproxy: could not connect to the backend of mail.test")
	if e := p.SessionError(t); !strings.Contains(e, "does not offer STARTTLS") {
		t.Errorf("session end error %q, want one about STARTTLS", e)
	}
	if rec := p.SessionEnds(t)[0]; rec["closed_by"] != dbproxy.ByBackend || rec["reason"] != dbproxy.ReasonUnreachable {
		t.Errorf("session end closed_by=%v reason=%v, want backend unreachable", rec["closed_by"], rec["reason"])
	}
	if d := ms.debug(); strings.Contains(d, "client.test") {
		t.Errorf("the backend saw the client's EHLO:\n%s", d)
	}
}

// TestBackendGreetingRefused checks that a backend greeting with 554 is
// told to the client as a 421, by the backend.
func TestBackendGreetingRefused(t *testing.T) {
	ca := dbtest.NewCA(t)
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: startFake(t, "busy", "554 5.3.2 busy.backend not accepting mail")})
	c := netClient(t, p, "mail.test")
	err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool})
	wantReply(t, err, 421, "4.3.0 mail.test leproxy: the backend refused the session")
	if e := p.SessionError(t); !strings.Contains(e, "554 5.3.2 busy.backend") {
		t.Errorf("session end error %q, want the backend's greeting", e)
	}
	if rec := p.SessionEnds(t)[0]; rec["closed_by"] != dbproxy.ByBackend || rec["reason"] != dbproxy.ReasonRefused {
		t.Errorf("session end closed_by=%v reason=%v, want backend refused", rec["closed_by"], rec["reason"])
	}
}

// TestProxyProtocolToBackend checks that with proxy_protocol the go-smtp
// backend, reading the header with go-proxyproto, sees the client's own
// address.
func TestProxyProtocolToBackend(t *testing.T) {
	for _, v := range []dbproxy.ProxyVersion{dbproxy.ProxyV1, dbproxy.ProxyV2} {
		t.Run(string(v), func(t *testing.T) {
			ca := dbtest.NewCA(t)
			ms := startMailServer(t, "backend", mailOptions{proxyProtocol: true})
			p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: ms.Addr, ProxyProtocol: v})
			conn := p.Dial(t)
			c, err := smtp.NewClient(conn, "mail.test")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool}); err != nil {
				t.Fatalf("STARTTLS: %v", err)
			}
			send(t, c, "mail.test", "from@client.test", "to@backend.test", "with the client's address")
			got := ms.sessions()
			if want := conn.LocalAddr().String(); len(got) != 1 || got[0] != want {
				t.Errorf("backend sessions from %q, want one from the client's %s", got, want)
			}
		})
	}
}

// TestBackendMalformedEHLOReply checks that a backend answering the
// replayed EHLO with something that is no SMTP reply is told to the client
// as a 421, not passed on.
func TestBackendMalformedEHLOReply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("220 broken.backend\r\n"))
				readLine(bufio.NewReader(c))
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			}()
		}
	}()
	ca := dbtest.NewCA(t)
	p := startSMTP(t, ca, "smtp", dbproxy.Route{Host: "mail.test", Backend: l.Addr().String()})
	c := netClient(t, p, "mail.test")
	err = c.StartTLS(&tls.Config{ServerName: "mail.test", RootCAs: ca.Pool})
	wantReply(t, err, 421, "4.3.0 mail.test leproxy: the backend refused the session")
	if e := p.SessionError(t); !strings.Contains(e, "malformed reply") {
		t.Errorf("session end error %q, want a malformed reply", e)
	}
}
