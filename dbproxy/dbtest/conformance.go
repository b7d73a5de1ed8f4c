package dbtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// A Conformance describes a protocol's client and backend to Run, the
// suite of behaviours every protocol shows whatever its wire format:
// routing by server name, the default route for clients without SNI, a
// protocol-level refusal for an unknown name, the plaintext policy,
// MaxConns, the handshake deadline, half-close, and a shutdown while a
// session runs.
type Conformance struct {
	// Protocol is the registered protocol name.
	Protocol string
	// StartBackend starts a backend named name on 127.0.0.1 until the test
	// ends and returns its address. Once a client's session is set up the
	// backend answers as EchoLines does (Request/ReadAnswer when those are
	// set) and closes when the client half-closes.
	StartBackend func(t testing.TB, name string) (addr string)
	// Connect sets up a session over conn, a TCP connection to the proxy,
	// as the protocol's client does: with TLS configured by cfg, or in
	// plaintext when cfg is nil. It returns the connection on which the
	// session's bytes then travel, or the error the client would report,
	// carrying the text the proxy sent when it sent one.
	Connect func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error)
	// Request and ReadAnswer, when set, replace the line exchange for
	// protocols whose sessions are not piped verbatim (Elasticsearch: an
	// HTTP request): Request is what asks the backend to answer msg, and
	// ReadAnswer reads the answer, "name:msg".
	Request    func(msg string) []byte
	ReadAnswer func(r io.Reader) (string, error)
	// NoHalfClose, when not "", says why a client's half-close ends the
	// session instead of letting the answer to its last request through
	// (Elasticsearch: net/http takes a client's EOF for a client gone). The
	// suite then checks only that the session ends, promptly.
	NoHalfClose string
	// Silent is set for a protocol that cannot tell a refused client why
	// (the generic tls): its refusals are closed connections.
	Silent bool
}

// Run runs the conformance suite as subtests of t.
func (cf Conformance) Run(t *testing.T) {
	t.Run("RoutesByServerName", cf.testRoutes)
	t.Run("NoServerNameGetsDefault", cf.testDefault)
	t.Run("UnknownServerName", cf.testUnknownName)
	t.Run("NoDefaultRefusesNoServerName", cf.testNoDefault)
	t.Run("PlaintextRefused", cf.testPlaintextRefused)
	t.Run("PlaintextAllowed", cf.testPlaintextAllowed)
	t.Run("MaxConns", cf.testMaxConns)
	t.Run("HandshakeDeadline", cf.testHandshakeDeadline)
	t.Run("HalfClose", cf.testHalfClose)
	t.Run("ShutdownDrains", cf.testShutdownDrains)
	t.Run("ShutdownForcesClose", cf.testShutdownForces)
}

// start starts backends a and b behind a proxy with routes a.test and
// b.test; mod, if not nil, adjusts the Config first.
func (cf Conformance) start(t *testing.T, mod func(*dbproxy.Config)) *Proxy {
	t.Helper()
	proto, ok := dbproxy.Lookup(cf.Protocol)
	if !ok {
		t.Fatalf("protocol %s is not registered", cf.Protocol)
	}
	cfg := dbproxy.Config{
		Protocol: proto,
		Routes: []dbproxy.Route{
			{Host: "a.test", Backend: cf.StartBackend(t, "a")},
			{Host: "b.test", Backend: cf.StartBackend(t, "b")},
		},
		Default: "a.test",
	}
	if mod != nil {
		mod(&cfg)
	}
	return StartProxy(t, NewCA(t), cfg)
}

// connect dials the proxy and sets up a session with SNI sni ("" for
// none), verifying the certificate for verifyName; plaintext when
// verifyName is "".
func (cf Conformance) connect(t *testing.T, p *Proxy, sni, verifyName string) (net.Conn, error) {
	t.Helper()
	var cfg *tls.Config
	if verifyName != "" {
		cfg = p.CA.ClientConfig(sni, verifyName)
	}
	return cf.Connect(t, p.Dial(t), cfg)
}

func (cf Conformance) mustConnect(t *testing.T, p *Proxy, sni, verifyName string) net.Conn {
	t.Helper()
	c, err := cf.connect(t, p, sni, verifyName)
	if err != nil {
		t.Fatalf("connecting with server name %q: %v", sni, err)
	}
	return c
}

// exchange asks the backend behind c to answer msg.
func (cf Conformance) exchange(c net.Conn, msg string) (string, error) {
	if cf.Request == nil {
		return ExchangeLine(c, msg)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(cf.Request(msg)); err != nil {
		return "", err
	}
	return cf.ReadAnswer(c)
}

func (cf Conformance) mustExchange(t *testing.T, c net.Conn, msg, want string) {
	t.Helper()
	got, err := cf.exchange(c, msg)
	if err != nil || got != want {
		t.Fatalf("exchanging %q: got %q, %v; want %q", msg, got, err, want)
	}
}

// wantRefused checks a refused client: an error, with text about want
// unless the protocol is Silent, and a session-end line with an error.
func (cf Conformance) wantRefused(t *testing.T, p *Proxy, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("the session was set up, want a refusal")
	}
	if !cf.Silent && !strings.Contains(strings.ToLower(err.Error()), want) {
		t.Errorf("client error %q does not mention %q", err, want)
	}
	if e := p.SessionError(t); e == "" {
		t.Error("session end logged no error")
	}
}

// wantEnd checks the closed_by and reason of the first session-end line.
func wantEnd(t *testing.T, p *Proxy, by, reason string) {
	t.Helper()
	p.SessionError(t) // waits for the line
	rec := p.SessionEnds(t)[0]
	if rec["closed_by"] != by || rec["reason"] != reason {
		t.Errorf("session end closed_by=%v reason=%v, want %s %s", rec["closed_by"], rec["reason"], by, reason)
	}
}

func (cf Conformance) testRoutes(t *testing.T) {
	p := cf.start(t, nil)
	cf.mustExchange(t, cf.mustConnect(t, p, "b.test", "b.test"), "one", "b:one")
	cf.mustExchange(t, cf.mustConnect(t, p, "A.TEST", "a.test"), "two", "a:two")
}

func (cf Conformance) testDefault(t *testing.T) {
	p := cf.start(t, nil)
	c := cf.mustConnect(t, p, "", "a.test")
	cf.mustExchange(t, c, "hello", "a:hello")
	cf.mustExchange(t, c, "again", "a:again")
}

func (cf Conformance) testUnknownName(t *testing.T) {
	p := cf.start(t, nil)
	// The proxy completes the handshake with the default's certificate,
	// so that the client can read why it is refused.
	_, err := cf.connect(t, p, "c.test", "a.test")
	cf.wantRefused(t, p, err, "no route")
	if e := p.SessionError(t); !strings.Contains(e, "no route") {
		t.Errorf("session end error %q, want one about no route", e)
	}
	if st := p.Srv.Stats(); st.Unrouted != 1 || st.Routes[0].Sessions+st.Routes[1].Sessions != 0 {
		t.Errorf("stats %+v: want 1 unrouted session, none routed", st)
	}
	wantEnd(t, p, dbproxy.ByLeproxy, dbproxy.ReasonRefused)
	if n := p.Srv.Stats().UnroutedEnds[dbproxy.End{By: dbproxy.ByLeproxy, Reason: dbproxy.ReasonRefused}]; n != 1 {
		t.Errorf("UnroutedEnds = %v, want one refused", p.Srv.Stats().UnroutedEnds)
	}
}

func (cf Conformance) testNoDefault(t *testing.T) {
	p := cf.start(t, func(c *dbproxy.Config) { c.Default = "" })
	_, err := cf.connect(t, p, "", "a.test")
	cf.wantRefused(t, p, err, "no route")
	cf.mustExchange(t, cf.mustConnect(t, p, "b.test", "b.test"), "x", "b:x")
}

func (cf Conformance) testPlaintextRefused(t *testing.T) {
	p := cf.start(t, nil)
	_, err := cf.connect(t, p, "", "")
	cf.wantRefused(t, p, err, "tls")
	wantEnd(t, p, dbproxy.ByLeproxy, dbproxy.ReasonRefused)
}

func (cf Conformance) testPlaintextAllowed(t *testing.T) {
	p := cf.start(t, func(c *dbproxy.Config) { c.Routes[0].AllowPlaintext = true })
	cf.mustExchange(t, cf.mustConnect(t, p, "", ""), "clear", "a:clear")
	// TLS clients are served as before.
	cf.mustExchange(t, cf.mustConnect(t, p, "b.test", "b.test"), "x", "b:x")
}

func (cf Conformance) testMaxConns(t *testing.T) {
	p := cf.start(t, func(c *dbproxy.Config) { c.MaxConns = 1 })
	first := cf.mustConnect(t, p, "a.test", "a.test")
	cf.mustExchange(t, first, "first", "a:first")
	_, err := cf.connect(t, p, "a.test", "a.test")
	if err == nil {
		t.Fatal("a second session was set up with MaxConns 1")
	}
	if st := p.Srv.Stats(); st.Refused != 1 {
		t.Errorf("Refused = %d, want 1", st.Refused)
	}
	first.Close()
	WaitFor(t, "the first session to end", func() bool { return len(p.SessionEnds(t)) == 1 })
	cf.mustExchange(t, cf.mustConnect(t, p, "a.test", "a.test"), "third", "a:third")
}

func (cf Conformance) testHandshakeDeadline(t *testing.T) {
	p := cf.start(t, func(c *dbproxy.Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	c := p.Dial(t)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c) // a greeting, if the protocol sends one, then the close
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent client was not closed within 5 s")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %v, before the 300ms deadline", d)
	}
	if e := p.SessionError(t); e == "" {
		t.Error("session end logged no error")
	}
	wantEnd(t, p, dbproxy.ByLeproxy, dbproxy.ReasonTimeout)
}

func (cf Conformance) testHalfClose(t *testing.T) {
	p := cf.start(t, nil)
	c := cf.mustConnect(t, p, "a.test", "a.test")
	cf.mustExchange(t, c, "before", "a:before")
	req := []byte("last\n")
	if cf.Request != nil {
		req = cf.Request("last")
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	MustWrite(t, c, req)
	if err := closeWrite(c); err != nil {
		t.Fatalf("half-closing: %v", err)
	}
	if cf.NoHalfClose != "" {
		t.Logf("no half-close: %s", cf.NoHalfClose)
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the session did not end after the client half-closed")
		}
		WaitFor(t, "the session to end", func() bool { return len(p.SessionEnds(t)) == 1 })
		return
	}
	var got string
	var err error
	if cf.ReadAnswer != nil {
		got, err = cf.ReadAnswer(c)
	} else {
		got, err = readLine(c)
		got = strings.TrimSuffix(got, "\n")
	}
	if err != nil || got != "a:last" {
		t.Fatalf("answer after half-close: got %q, %v; want %q", got, err, "a:last")
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("after the answer: got %q, %v; want a clean EOF", rest, err)
	}
	WaitFor(t, "the session to end", func() bool { return len(p.SessionEnds(t)) == 1 })
	if e := p.SessionError(t); e != "" {
		t.Errorf("session end error %q, want none", e)
	}
	wantEnd(t, p, dbproxy.ByClient, dbproxy.ReasonClosed)
	if n := p.Srv.Stats().Routes[0].Ends[dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed}]; n != 1 {
		t.Errorf("route Ends = %v, want one closed by the client", p.Srv.Stats().Routes[0].Ends)
	}
}

func (cf Conformance) testShutdownDrains(t *testing.T) {
	p := cf.start(t, nil)
	c := cf.mustConnect(t, p, "a.test", "a.test")
	cf.mustExchange(t, c, "before", "a:before")
	done := make(chan error, 1)
	go func() { done <- p.Srv.Shutdown(context.Background()) }()
	WaitFor(t, "the listener to close", func() bool {
		nc, err := net.Dial("tcp", p.Addr)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		// A protocol that serves requests itself may end an idle session
		// at once; one that pipes must wait for the client.
		if cf.Request == nil {
			t.Fatalf("Shutdown returned %v with a session open", err)
		}
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		return
	case <-time.After(100 * time.Millisecond):
		c.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the session ended")
	}
}

func (cf Conformance) testShutdownForces(t *testing.T) {
	p := cf.start(t, nil)
	c := cf.mustConnect(t, p, "a.test", "a.test")
	cf.mustExchange(t, c, "before", "a:before")
	// A request in flight keeps even a request-serving session open.
	if cf.Request != nil {
		MustWrite(t, c, cf.Request("slow")[:1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's deadline", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the session was still open after a forced shutdown")
	}
	wantEnd(t, p, dbproxy.ByLeproxy, dbproxy.ReasonShutdown)
}

// closeWrite half-closes c: close_notify and FIN for TLS.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		return closeWrite(tc.NetConn())
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("the connection cannot half-close")
}

// LineClient is a Conformance Connect for a TLS-first protocol whose
// clients speak in lines (Redis inline commands, memcached's text
// protocol): TLS with cfg (plaintext when nil), then the line first. A
// refusal answers it in the protocol's words, which refusal, when not nil,
// turns into an error (nil for an answer that is no refusal); the echo
// backend of a session that is up answers "name:first". On an error the
// client hangs up, as real clients do.
func LineClient(first string, refusal func(answer string) error) func(testing.TB, net.Conn, *tls.Config) (net.Conn, error) {
	return func(_ testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
		c, err := lineClient(conn, cfg, first, refusal)
		if err != nil {
			conn.Close()
		}
		return c, err
	}
}

func lineClient(conn net.Conn, cfg *tls.Config, first string, refusal func(string) error) (net.Conn, error) {
	c := conn
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	got, err := ExchangeLine(c, first)
	if refusal != nil {
		if err := refusal(strings.TrimSuffix(got, "\r")); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(got, ":"+first) {
		return nil, fmt.Errorf("first exchange: got %q", got)
	}
	return c, nil
}
