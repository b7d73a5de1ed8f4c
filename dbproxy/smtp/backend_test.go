package smtp

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/pires/go-proxyproto"
)

// Test users of the go-smtp backends.
const (
	testUser     = "alice"
	testPassword = "alice-secret"
)

// A mailServer is a go-smtp server, the real SMTP server library, as a
// backend: AUTH PLAIN for testUser, every message kept. Its Debug log
// holds every line it read and wrote.
type mailServer struct {
	Addr string
	srv  *smtp.Server

	mu       sync.Mutex
	msgs     []*mail
	remotes  []string // the client address of each session, as the server saw it
	debugLog bytes.Buffer
}

// A mail is a message the server accepted.
type mail struct {
	user, from string
	to         []string
	data       string
}

// mailOptions are how a test's backend runs.
type mailOptions struct {
	// starttls offers STARTTLS with this config; AUTH is then offered
	// only after TLS, as a careful server does.
	starttls *tls.Config
	// implicit runs TLS from the first byte with this config (port 465).
	implicit *tls.Config
	// proxyProtocol requires a PROXY protocol header on every connection.
	proxyProtocol bool
}

// startMailServer starts a go-smtp backend named name on 127.0.0.1 until
// the test ends.
func startMailServer(t testing.TB, name string, opt mailOptions) *mailServer {
	t.Helper()
	ms := &mailServer{}
	srv := smtp.NewServer(ms)
	srv.Domain = name
	srv.MaxMessageBytes = 1 << 20
	srv.ReadTimeout, srv.WriteTimeout = 20*time.Second, 20*time.Second
	srv.TLSConfig = opt.starttls
	srv.AllowInsecureAuth = opt.starttls == nil // behind leproxy on a trusted link
	srv.Debug = (*lockedWriter)(ms)
	srv.ErrorLog = testLogger{t}
	ms.srv = srv
	var l net.Listener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.Addr = l.Addr().String()
	if opt.proxyProtocol {
		l = &proxyproto.Listener{
			Listener:          l,
			ReadHeaderTimeout: 10 * time.Second,
			ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		}
	}
	if opt.implicit != nil {
		l = tls.NewListener(l, opt.implicit)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("go-smtp Serve: %v", err)
		}
	})
	return ms
}

// NewSession implements smtp.Backend.
func (ms *mailServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.remotes = append(ms.remotes, c.Conn().RemoteAddr().String())
	return &mailSession{ms: ms, m: new(mail)}, nil
}

// mails returns the messages accepted so far.
func (ms *mailServer) mails() []*mail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return slices.Clone(ms.msgs)
}

// sessions returns the client address of each session so far.
func (ms *mailServer) sessions() []string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return slices.Clone(ms.remotes)
}

// debug returns the server's wire log so far.
func (ms *mailServer) debug() string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.debugLog.String()
}

// lockedWriter is the server's Debug writer.
type lockedWriter mailServer

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.debugLog.Write(b)
}

type testLogger struct{ t testing.TB }

func (l testLogger) Printf(format string, v ...any) { l.t.Logf("go-smtp: "+format, v...) }
func (l testLogger) Println(v ...any)               { l.t.Log(append([]any{"go-smtp:"}, v...)...) }

// mailSession is one session of a mailServer.
type mailSession struct {
	ms *mailServer
	m  *mail
}

var _ smtp.AuthSession = (*mailSession)(nil)

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != testUser || password != testPassword {
			return errors.New("invalid credentials")
		}
		s.m.user = username
		return nil
	}), nil
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	s.m.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.to = append(s.m.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.data = string(b)
	s.ms.mu.Lock()
	s.ms.msgs = append(s.ms.msgs, s.m)
	s.ms.mu.Unlock()
	s.m = &mail{user: s.m.user}
	return nil
}

func (s *mailSession) Reset()        { s.m = &mail{user: s.m.user} }
func (s *mailSession) Logout() error { return nil }

// startSMTP starts a leproxy listener of protocol proto (smtp, smtps)
// with routes, the first the default, whose certificates name each host
// and 127.0.0.1 (for swaks, which verifies a certificate for the address
// it dials).
func startSMTP(t testing.TB, ca *dbtest.CA, proto string, routes ...dbproxy.Route) *dbtest.Proxy {
	t.Helper()
	p, ok := dbproxy.Lookup(proto)
	if !ok {
		t.Fatalf("%s is not registered", proto)
	}
	certs := make(map[string]*tls.Certificate)
	for _, r := range routes {
		c, _, _ := ca.Issue(t, r.Host, "127.0.0.1")
		certs[r.Host] = &c
	}
	return dbtest.StartProxy(t, ca, dbproxy.Config{
		Protocol: p,
		Routes:   routes,
		Default:  routes[0].Host,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := certs[hello.ServerName]; c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate for " + hello.ServerName)
		},
	})
}

// wantMail checks that ms accepted exactly one message, from testUser,
// with from, to and a body containing body.
func wantMail(t *testing.T, ms *mailServer, from, to, body string) {
	t.Helper()
	var msgs []*mail
	dbtest.WaitFor(t, "the backend to accept the message", func() bool {
		msgs = ms.mails()
		return len(msgs) > 0
	})
	if len(msgs) != 1 {
		t.Fatalf("backend accepted %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.user != testUser || m.from != from || !slices.Equal(m.to, []string{to}) {
		t.Errorf("backend got a message from %q as user %q to %q, want from %q as %q to %q", m.from, m.user, m.to, from, testUser, to)
	}
	if !strings.Contains(m.data, body) {
		t.Errorf("message data %q does not contain %q", m.data, body)
	}
}
