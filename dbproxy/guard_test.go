package dbproxy_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// recordingGuard is a ClientGuard that takes connections while open is
// set and records what it is told.
type recordingGuard struct {
	mu       sync.Mutex
	refuse   bool
	admitted int
	released int
	failures []string
}

func (g *recordingGuard) Admit(net.Addr) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse {
		return nil, errors.New("over the limit")
	}
	g.admitted++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.released++
			g.mu.Unlock()
		})
	}, nil
}

func (g *recordingGuard) Failed(_ net.Addr, kind string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failures = append(g.failures, kind)
}

func (g *recordingGuard) state() (admitted, released int, failures []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitted, g.released, slices.Clone(g.failures)
}

// TestClientGuard: the Server asks its Guard before taking a connection,
// closes one it refuses, releases each taken one when its session ends,
// and reports a failed TLS handshake as "tls" and a refused handshake
// (a server name with no route) as "protocol", once each; an unreachable
// backend is nobody's failure.
func TestClientGuard(t *testing.T) {
	g := &recordingGuard{}
	p, _, _ := twoEchoes(t, func(c *dbproxy.Config) {
		c.Guard = g
		c.Default = ""
		// A reserved port nothing listens on (a port just closed could be
		// the proxy's own by the time it is dialled).
		c.Routes = append(c.Routes, dbproxy.Route{Host: "down.test", Backend: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))})
	})
	ends := func(n int) {
		t.Helper()
		dbtest.WaitFor(t, "session ends", func() bool { return len(p.SessionEnds(t)) == n })
	}

	c := p.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, c, []byte("hello\n"))
	c.Close()
	ends(1)
	if a, r, f := g.state(); a != 1 || r != 1 || len(f) != 0 {
		t.Fatalf("a good session: admitted %d, released %d, failures %v; want 1, 1, none", a, r, f)
	}

	// A client that does not trust the certificate aborts the handshake.
	if err := tls.Client(p.Dial(t), &tls.Config{ServerName: "a.test"}).Handshake(); err == nil {
		t.Fatal("handshake without the test CA succeeded")
	}
	ends(2)
	// No route for the server name: the handshake completes, then leproxy
	// refuses the session.
	nr := p.DialTLS(t, "nowhere.test", "a.test")
	io.ReadAll(nr)
	ends(3)
	// The backend is down: not the client's fault.
	down := p.DialTLS(t, "down.test", "down.test")
	io.ReadAll(down)
	ends(4)
	if a, r, f := g.state(); a != 4 || r != 4 || !slices.Equal(f, []string{dbproxy.FailTLS, dbproxy.FailProtocol}) {
		t.Fatalf("admitted %d, released %d, failures %v; want 4, 4, [tls protocol]", a, r, f)
	}

	g.mu.Lock()
	g.refuse = true
	g.mu.Unlock()
	refused := p.Dial(t)
	if n, err := refused.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a refused connection read %d bytes", n)
	}
	if got := p.Srv.Stats().Refused; got != 1 {
		t.Errorf("Stats().Refused = %d, want 1", got)
	}

	// SetGuard(nil) takes everyone.
	p.Srv.SetGuard(nil)
	ok := p.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, ok, []byte("again\n"))
	ok.Close()
	ends(5)
	if a, _, _ := g.state(); a != 4 {
		t.Errorf("the removed guard was asked again (%d admitted)", a)
	}
}
