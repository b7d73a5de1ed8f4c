package dbproxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// servedProtocol serves its sessions itself with Session.Serve, as
// Elasticsearch and FTP do: after TLS it reads commands, one a line.
//
//	listen  opens a session listener and answers its address
//	wait    answers "draining" once the Server begins to shut down, and ends
//	hang    dials the backend and reads from it (a request in flight)
//	pump    pipes the rest of the session to the backend with Pump
//	other   answered "served:<line>"
//
// It records the route tables RoutesChanged is given.
type servedProtocol struct {
	mu      sync.Mutex
	changes [][]dbproxy.Route
}

var (
	_ dbproxy.Protocol      = (*servedProtocol)(nil)
	_ dbproxy.RoutesWatcher = (*servedProtocol)(nil)
)

func (*servedProtocol) Name() string   { return "test-served" }
func (*servedProtocol) ALPN() []string { return nil }

func (p *servedProtocol) RoutesChanged(routes []dbproxy.Route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changes = append(p.changes, routes)
}

func (p *servedProtocol) routeChanges() [][]dbproxy.Route {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]dbproxy.Route(nil), p.changes...)
}

func (p *servedProtocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	tc, err := s.ServerHandshake(ctx, client)
	if err != nil {
		return nil, nil, err
	}
	r, err := s.Route(tc.ConnectionState().ServerName)
	if err != nil {
		return nil, nil, err
	}
	return nil, nil, s.Serve(tc, func(ctx context.Context, conn net.Conn) error {
		br := bufio.NewReader(conn)
		lines := 0
		defer func() { s.AddLogAttrs("lines", lines) }()
		for {
			line, err := br.ReadString('\n')
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			lines++
			var reply string
			switch line = strings.TrimSuffix(line, "\n"); line {
			case "listen":
				l, err := s.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				reply = l.Addr().String()
			case "listen-close":
				// A listener the protocol closes itself is forgotten.
				for range 3 {
					l, err := s.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						return err
					}
					l.Close()
				}
				reply = fmt.Sprint("listeners:", s.ListenerCount())
			case "wait":
				// A graceful end: answer, then end the session.
				<-ctx.Done()
				_, err := io.WriteString(conn, "draining\n")
				return err
			case "hang":
				b, err := s.Dial(context.Background(), r)
				if err != nil {
					return err
				}
				_, err = b.Read(make([]byte, 1))
				return fmt.Errorf("backend read: %w", err)
			case "pump":
				b, err := s.DialBackend(context.Background(), r)
				if err != nil {
					return err
				}
				if _, err := io.WriteString(conn, "pumping\n"); err != nil {
					return err
				}
				return s.Pump(conn, b)
			default:
				reply = "served:" + line
			}
			if _, err := io.WriteString(conn, reply+"\n"); err != nil {
				return err
			}
		}
	})
}

func startServed(t *testing.T, backend string, mod func(*dbproxy.Config)) (*dbtest.Proxy, *servedProtocol) {
	t.Helper()
	proto := new(servedProtocol)
	cfg := dbproxy.Config{Protocol: proto, Routes: []dbproxy.Route{{Host: "a.test", Backend: backend}}, Default: "a.test"}
	if mod != nil {
		mod(&cfg)
	}
	return dbtest.StartProxy(t, dbtest.NewCA(t), cfg), proto
}

func TestServeCountsAndLogs(t *testing.T) {
	echo := dbtest.StartEcho(t, "a", nil)
	p, _ := startServed(t, echo.Addr, nil)
	c := p.DialTLS(t, "a.test", "a.test")
	if got := dbtest.EchoLine(t, c, "hello"); got != "served:hello" {
		t.Fatalf("got %q", got)
	}
	// The answer is counted once its write returns, just after the client
	// read it.
	dbtest.WaitFor(t, "the answer's bytes counted", func() bool { return p.Srv.Stats().Routes[0].BytesOut == 13 })
	if st := p.Srv.Stats().Routes[0]; st.Active != 1 || st.BytesIn != 6 {
		t.Errorf("during the session: %+v, want 1 active, 6 bytes in", st)
	}
	// Pump carries on with the backend, counting on the same route.
	if got := dbtest.EchoLine(t, c, "pump"); got != "pumping" {
		t.Fatalf("pump: got %q", got)
	}
	if got := dbtest.EchoLine(t, c, "through"); got != "a:through" {
		t.Fatalf("after pump: got %q", got)
	}
	c.Close()
	dbtest.WaitFor(t, "the session end", func() bool { return len(p.SessionEnds(t)) == 1 })
	rec := p.SessionEnds(t)[0]
	in, out := float64(len("hello\npump\nthrough\n")), float64(len("served:hello\npumping\na:through\n"))
	for k, v := range map[string]any{"route": "a.test", "lines": float64(2), "bytes_in": in, "bytes_out": out, "error": nil} {
		if rec[k] != v {
			t.Errorf("session end %s = %v, want %v", k, rec[k], v)
		}
	}
	st := p.Srv.Stats()
	if st.Handled != 0 || st.Routes[0].Sessions != 1 || st.Routes[0].Active != 0 || st.Routes[0].Errors != 0 ||
		st.Routes[0].BytesIn != uint64(in) || st.Routes[0].BytesOut != uint64(out) {
		t.Errorf("stats after the session: %+v", st)
	}
}

func TestServeIdleTimeout(t *testing.T) {
	p, _ := startServed(t, dbtest.ClosedAddr(t), func(c *dbproxy.Config) { c.IdleTimeout = 200 * time.Millisecond })
	c := p.DialTLS(t, "a.test", "a.test")
	dbtest.EchoLine(t, c, "hello")
	start := time.Now()
	if _, err := dbtest.ReadAll(t, c); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("an idle served session was not closed")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	if e := p.SessionError(t); e != "idle timeout" {
		t.Errorf("session error %q, want idle timeout", e)
	}
	if rec := p.SessionEnds(t)[0]; rec["closed_by"] != "leproxy" || rec["reason"] != "idle_timeout" {
		t.Errorf("closed_by=%v reason=%v, want leproxy idle_timeout", rec["closed_by"], rec["reason"])
	}
	if n := p.Srv.Stats().Routes[0].Errors; n != 1 {
		t.Errorf("route errors = %d, want 1", n)
	}
}

func TestServeDrainAndForcedClose(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		p, _ := startServed(t, dbtest.ClosedAddr(t), nil)
		c := p.DialTLS(t, "a.test", "a.test")
		dbtest.MustWrite(t, c, []byte("wait\n"))
		dbtest.WaitFor(t, "the session to be served", func() bool { return p.Srv.Stats().Routes[0].BytesIn == 5 })
		if err := p.Srv.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		// Shutdown waited for the session, which saw the drain begin.
		got, _ := dbtest.ReadAll(t, c)
		if got != "draining\n" {
			t.Errorf("got %q, want the session's answer to the drain", got)
		}
		if rec := p.SessionEnds(t)[0]; rec["closed_by"] != "leproxy" || rec["reason"] != "drain" {
			t.Errorf("closed_by=%v reason=%v, want leproxy drain", rec["closed_by"], rec["reason"])
		}
	})
	t.Run("forced", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		backendClosed := make(chan error, 1)
		dbtest.ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) {
			_, err := c.Read(make([]byte, 1))
			backendClosed <- err
		})
		p, _ := startServed(t, l.Addr().String(), nil)
		c := p.DialTLS(t, "a.test", "a.test")
		dbtest.MustWrite(t, c, []byte("hang\n"))
		dbtest.WaitFor(t, "the backend to be dialled", func() bool { return p.Srv.Stats().Routes[0].BytesIn == 5 })
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := p.Srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
		}
		select {
		case err := <-backendClosed:
			if !errors.Is(err, io.EOF) {
				t.Errorf("backend read %v, want EOF", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the backend connection from Session.Dial stayed open after a forced shutdown")
		}
	})
}

func TestSessionListen(t *testing.T) {
	p, _ := startServed(t, dbtest.ClosedAddr(t), nil)
	c := p.DialTLS(t, "a.test", "a.test")
	addr := dbtest.EchoLine(t, c, "listen")
	if nc, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("the session's listener does not accept: %v", err)
	} else {
		nc.Close()
	}
	if got := dbtest.EchoLine(t, c, "listen-close"); got != "listeners:1" {
		t.Errorf("after closing 3 listeners of its own: got %q, want listeners:1", got)
	}
	c.Close()
	dbtest.WaitFor(t, "the session end", func() bool { return len(p.SessionEnds(t)) == 1 })
	if nc, err := net.Dial("tcp", addr); err == nil {
		nc.Close()
		t.Error("the session's listener outlived the session")
	}
}

func TestSetLimits(t *testing.T) {
	p, _, _ := twoEchoes(t, func(c *dbproxy.Config) { c.MaxConns = 1 })
	first := p.DialTLS(t, "a.test", "a.test")
	dbtest.EchoLine(t, first, "one")
	if _, err := dbtest.ReadAll(t, p.Dial(t)); err != nil {
		t.Fatalf("refused client: %v", err)
	}
	if st := p.Srv.Stats(); st.Refused != 1 {
		t.Fatalf("Refused = %d, want 1", st.Refused)
	}
	p.Srv.SetLimits(2, 150*time.Millisecond)
	if m, idle := p.Srv.Limits(); m != 2 || idle != 150*time.Millisecond {
		t.Errorf("Limits() = %d, %v", m, idle)
	}
	second := p.DialTLS(t, "a.test", "a.test")
	dbtest.EchoLine(t, second, "two")
	// The new session has the new idle timeout; the first keeps its hour.
	if _, err := dbtest.ReadAll(t, second); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the new idle timeout did not apply")
	}
	if got := dbtest.EchoLine(t, first, "still"); got != "a:still" {
		t.Errorf("first session: got %q", got)
	}
	p.Srv.SetLimits(0, 0)
	if m, idle := p.Srv.Limits(); m != dbproxy.DefaultMaxConns || idle != dbproxy.DefaultIdleTimeout {
		t.Errorf("Limits() after zero values = %d, %v; want the defaults", m, idle)
	}
}

func TestSetRoutesKeepsCountingRemovedRoutes(t *testing.T) {
	p, a, b := twoEchoes(t, nil)
	c := p.DialTLS(t, "b.test", "b.test")
	dbtest.EchoLine(t, c, "x")
	if err := p.Srv.SetRoutes([]dbproxy.Route{{Host: "a.test", Backend: a.Addr}}, "a.test"); err != nil {
		t.Fatal(err)
	}
	// The session on the removed route goes on and still shows.
	dbtest.EchoLine(t, c, "yy")
	st := p.Srv.Stats()
	if len(st.Routes) != 2 || st.Routes[1].Host != "b.test" || !st.Routes[1].Removed || st.Routes[1].Active != 1 {
		t.Fatalf("stats after the reload: %+v, want b.test removed and 1 active", st.Routes)
	}
	// A second reload keeps it while the session lasts.
	if err := p.Srv.SetRoutes([]dbproxy.Route{{Host: "a.test", Backend: a.Addr}}, ""); err != nil {
		t.Fatal(err)
	}
	if st := p.Srv.Stats(); len(st.Routes) != 2 || !st.Routes[1].Removed {
		t.Fatalf("stats after a second reload: %+v", st.Routes)
	}
	c.Close()
	dbtest.WaitFor(t, "the session end", func() bool { return len(p.SessionEnds(t)) == 1 })
	// Its final counts are reported once, then it leaves.
	st = p.Srv.Stats()
	if len(st.Routes) != 2 || !st.Routes[1].Removed || st.Routes[1].Active != 0 || st.Routes[1].BytesIn != 5 || st.Routes[1].BytesOut != 9 {
		t.Fatalf("stats after the session: %+v, want b.test's final 5 bytes in, 9 out", st.Routes)
	}
	if st := p.Srv.Stats(); len(st.Routes) != 1 {
		t.Fatalf("stats reported b.test again: %+v", st.Routes)
	}
	// A route that comes back has no counters of its old self left to lose.
	if err := p.Srv.SetRoutes([]dbproxy.Route{{Host: "a.test", Backend: a.Addr}, {Host: "b.test", Backend: b.Addr}}, ""); err != nil {
		t.Fatal(err)
	}
	if st := p.Srv.Stats(); len(st.Routes) != 2 || st.Routes[1].Removed || st.Routes[0].Host != "a.test" {
		t.Errorf("stats after b.test came back: %+v", st.Routes)
	}
}

func TestRoutesWatcher(t *testing.T) {
	p, proto := startServed(t, "127.0.0.1:1", nil)
	if got := proto.routeChanges(); len(got) != 1 || len(got[0]) != 1 || got[0][0].Host != "a.test" {
		t.Fatalf("after New: %v, want one call with a.test", got)
	}
	if err := p.Srv.SetRoutes([]dbproxy.Route{{Host: "A.test", Backend: "127.0.0.1:1"}, {Host: "B.Test.", Backend: "127.0.0.1:2", TLS: dbproxy.TLSVerify}}, ""); err != nil {
		t.Fatal(err)
	}
	got := proto.routeChanges()
	if len(got) != 2 || len(got[1]) != 2 || got[1][0].Host != "a.test" || got[1][1].Host != "b.test" || got[1][1].TLS != dbproxy.TLSVerify {
		t.Fatalf("after SetRoutes: %v, want a second call with a.test and b.test", got)
	}
	// A failed SetRoutes tells nobody.
	if err := p.Srv.SetRoutes(nil, ""); err == nil {
		t.Fatal("SetRoutes with no routes succeeded")
	}
	if n := len(proto.routeChanges()); n != 2 {
		t.Errorf("%d calls after a failed SetRoutes, want 2", n)
	}
}
