package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/leproxy/leproxy/internal/testenv"
)

// waitFor polls cond until it holds, failing the test after a deadline
// that only guards against hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPass waits until the maintenance loop has finished a pass that
// started after the call.
func waitPass(t *testing.T, m *Manager) {
	t.Helper()
	// A pass in progress may have read the state before the caller's
	// change: wait for the end of the next one after it.
	start := m.passes.Load()
	m.poke()
	waitFor(t, "a maintenance pass", func() bool { return m.passes.Load() >= start+1 })
	start = m.passes.Load()
	m.poke()
	waitFor(t, "a maintenance pass", func() bool { return m.passes.Load() >= start+1 })
}

func TestBackoff(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 40; n++ {
		for range 50 {
			d := backoff(n)
			if d < backoffMin || d > backoffMax {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, backoffMin, backoffMax)
			}
			if want := min(backoffMin<<min(n-1, 20), backoffMax); d > want || d < want*3/4 {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want*3/4, want)
			}
		}
		if d := backoff(n); n > 1 && d < prev/2 {
			t.Errorf("backoff(%d) = %v shrank from %v", n, d, prev)
		}
		prev = backoff(n)
	}
	if backoff(1) != backoffMin {
		t.Errorf("backoff(1) = %v, want %v", backoff(1), backoffMin)
	}
}

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &tls.Certificate{Leaf: &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(90 * 24 * time.Hour)}}
	if got, want := renewAt(c, time.Time{}), t0.Add(60*24*time.Hour); !got.Equal(want) {
		t.Errorf("renewAt = %v, want %v (a third of the lifetime left)", got, want)
	}
	// Obtained (by our clock) just before its renewal point: not again
	// before a tenth of its lifetime.
	obtained := t0.Add(59 * 24 * time.Hour)
	if got, want := renewAt(c, obtained), obtained.Add(9*24*time.Hour); !got.Equal(want) {
		t.Errorf("renewAt after a late issuance = %v, want %v", got, want)
	}
}

// slowACME is an ACME "server" whose every request hangs until the request
// is cancelled; it reports each request's end on ended.
func slowACME(t *testing.T) (dirURL string, roots *x509.CertPool, started *atomic.Int32, ended chan error) {
	t.Helper()
	started = new(atomic.Int32)
	ended = make(chan error, 16)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}))
	t.Cleanup(srv.Close)
	roots = x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv.URL + "/dir", roots, started, ended
}

// TestHandshakeContextBoundsIssuance: a first handshake waits for the
// order no longer than its own deadline, a name leaving the mapping
// cancels its order, and Close ends the orders in flight at once.
func TestHandshakeContextBoundsIssuance(t *testing.T) {
	dirURL, roots, started, ended := slowACME(t)
	logger, logs := newTestLogger()
	m, err := New(Config{CacheDir: t.TempDir(), DirectoryURL: dirURL, RootCAs: roots, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.SetHosts([]string{"a.example.test", "b.example.test"})
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))

	handshakeWithin := func(name string, d time.Duration) (time.Duration, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		start := time.Now()
		err = tls.Client(conn, &tls.Config{ServerName: name, InsecureSkipVerify: true}).HandshakeContext(ctx)
		return time.Since(start), err
	}
	// The server's handshake context is the client's connection: give the
	// server side a short deadline through its own listener instead.
	cfg := m.TLSConfig("http/1.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	var took atomic.Int64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = tls.Server(c, cfg).HandshakeContext(ctx)
		took.Store(int64(time.Since(start)))
		serverErr <- err
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	go tls.Client(client, &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true}).Handshake()
	select {
	case err := <-serverErr:
		if err == nil {
			t.Fatal("handshake succeeded against a CA that never answers")
		}
		if d := time.Duration(took.Load()); d > 10*time.Second {
			t.Errorf("handshake with a 300 ms deadline took %v", d)
		}
	case <-time.After(time.Minute):
		t.Fatal("handshake with a 300 ms deadline still waiting for the CA after a minute")
	}
	if started.Load() == 0 {
		t.Error("no request reached the CA")
	}
	// The order goes on in the background: a second handshake for the
	// name joins it instead of ordering again, and is bounded likewise.
	before := started.Load()
	if d, err := handshakeWithin("a.example.test", 500*time.Millisecond); err == nil || d > 10*time.Second {
		t.Errorf("second handshake: %v after %v, want a failure within its deadline", err, d)
	}
	if got := started.Load(); got != before {
		t.Errorf("second handshake made %d more requests to the CA, want 0 (one order per name)", got-before)
	}

	// b's order is in flight (waiting for the account a's order is
	// registering); removing b from the mapping cancels it.
	bDone := make(chan error, 1)
	go func() {
		_, err := m.GetCertificate(ecdsaHello("b.example.test"))
		bDone <- err
	}()
	waitFor(t, "b's order to start", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		e := m.entries[certKey{host: "b.example.test"}]
		return e != nil && e.flight != nil
	})
	m.SetHosts([]string{"a.example.test"})
	select {
	case err := <-bDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("b's handshake ended with %v, want its order cancelled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("b's order still running a minute after b left the mapping")
	}
	if got := logs.count("certificate order cancelled", "host=b.example.test"); got != 1 {
		t.Errorf("%d \"certificate order cancelled\" records for b, want 1; log:\n%s", got, logs)
	}

	// Close ends a's order (its request was the first to start) promptly.
	closed := make(chan struct{})
	start := time.Now()
	go func() {
		m.Close()
		close(closed)
	}()
	select {
	case <-closed:
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Close took %v", d)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close still waiting after a minute")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the CA's request ended with %v, want it cancelled by Close", err)
		}
	case <-time.After(time.Minute):
		t.Error("the order's request still open at the CA a minute after Close")
	}
	if got := logs.count("certificate failed"); got != 0 {
		t.Errorf("%d failures logged for orders cut short by Close or by the mapping, want 0; log:\n%s", got, logs)
	}
}

// authzRecorder keeps the authorizations of the orders a test's Managers
// had authorized, so that the test can deactivate them.
type authzRecorder struct {
	mu     sync.Mutex
	client *acme.Client
	urls   []string
}

// recordAuthorizations records, for the rest of the test, the
// authorizations of every order authorize returns ready.
func recordAuthorizations(t *testing.T) *authzRecorder {
	r := new(authzRecorder)
	authorizedHook = func(client *acme.Client, o *acme.Order) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.client = client
		r.urls = append(r.urls, o.AuthzURLs...)
	}
	t.Cleanup(func() { authorizedHook = nil })
	return r
}

// deactivateAll deactivates every recorded authorization, so that the CA
// must validate the next order afresh.
func (r *authzRecorder) deactivateAll(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range r.urls {
		z, err := r.client.GetAuthorization(ctx, u)
		if err != nil {
			t.Fatalf("fetching authorization %s: %v", u, err)
		}
		if z.Status != acme.StatusValid {
			continue
		}
		if err := r.client.RevokeAuthorization(ctx, u); err != nil {
			t.Fatalf("deactivating authorization %s: %v", u, err)
		}
	}
	r.urls = nil
}

// pebbleClockManager is pebbleManager with a fake clock.
func pebbleClockManager(t *testing.T, p *testenv.Pebble, clk *fakeClock, noARI bool, hosts ...string) (*Manager, *logBuffer) {
	t.Helper()
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{
		CacheDir:     t.TempDir(),
		DirectoryURL: p.DirectoryURL,
		RootCAs:      p.ServerRoots,
		Logger:       logger,
		clock:        clk,
		noARI:        noARI,
	})
	m.SetHosts(hosts)
	return m, logs
}

// served returns the certificate the Manager serves for name now.
func served(t *testing.T, m *Manager, name string) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(ecdsaHello(name))
	if err != nil {
		t.Fatalf("GetCertificate(%s): %v", name, err)
	}
	return c.Leaf
}

func statusOfHost(m *Manager, host string) Status {
	for _, s := range m.Status() {
		if s.Host == host {
			return s
		}
	}
	return Status{}
}

// TestRenewal (a CA without ARI): with the clock moved to a third of the lifetime left, the
// maintenance loop renews once; when the CA then fails, the old
// certificate is still served, the failure is logged and shown with the
// next attempt, nothing is retried before it, and the retry succeeds.
func TestRenewal(t *testing.T) {
	authorized := recordAuthorizations(t)
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	// Ahead of the CA's clock, so its certificates are valid at once.
	clk := newFakeClock(time.Now().Add(time.Hour))
	m, logs := pebbleClockManager(t, p, clk, true, "r.example.test")
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	ln, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln, m.TLSConfig("http/1.1"))

	first := served(t, m, "r.example.test")
	st := statusOfHost(m, "r.example.test")
	want := first.NotAfter.Add(-first.NotAfter.Sub(first.NotBefore) / 3)
	if !st.NextAttempt.Equal(want) {
		t.Errorf("NextAttempt = %v, want %v (a third of the lifetime left)", st.NextAttempt, want)
	}

	// Just before: nothing happens.
	clk.Set(want.Add(-time.Second))
	waitPass(t, m)
	if got := p.Orders(); got != 1 {
		t.Fatalf("%d orders a second before the renewal time, want 1", got)
	}
	clk.Set(want.Add(time.Second))
	waitFor(t, "the renewal", func() bool { return !served(t, m, "r.example.test").Equal(first) })
	second := served(t, m, "r.example.test")
	if got := p.Orders(); got != 2 {
		t.Errorf("%d orders after the renewal, want 2", got)
	}
	if got := logs.count("certificate renewed", "host=r.example.test", "key=ecdsa", "source=acme"); got != 1 {
		t.Errorf("%d \"certificate renewed\" records, want 1; log:\n%s", got, logs)
	}
	waitPass(t, m)
	if got := p.Orders(); got != 2 {
		t.Fatalf("%d orders after a pass following the renewal, want 2 (no loop)", got)
	}

	// The CA cannot validate any more: the renewal fails. Pebble reuses a
	// valid authorization 1% of the time even when told never to
	// (PEBBLE_AUTHZREUSE=0 still reuses when rand.Intn(100) is 0), and a
	// reused one needs no validation, so deactivate them first.
	authorized.deactivateAll(t)
	ln.Close()
	st = statusOfHost(m, "r.example.test")
	clk.Set(st.NextAttempt.Add(time.Second))
	waitFor(t, "the failure", func() bool { return statusOfHost(m, "r.example.test").Failures == 1 })
	failedAt := clk.Now()
	st = statusOfHost(m, "r.example.test")
	if !strings.Contains(st.LastError, "tls-alpn-01") || !st.LastAttempt.Equal(failedAt) {
		t.Errorf("Status after the failure = %+v, want LastError naming tls-alpn-01, LastAttempt %v", st, failedAt)
	}
	if !st.NextAttempt.Equal(failedAt.Add(backoffMin)) {
		t.Errorf("NextAttempt = %v, want %v (the first backoff)", st.NextAttempt, failedAt.Add(backoffMin))
	}
	if !st.NotAfter.Equal(second.NotAfter) {
		t.Errorf("Status NotAfter = %v, want the served certificate's %v", st.NotAfter, second.NotAfter)
	}
	if got := served(t, m, "r.example.test"); !got.Equal(second) {
		t.Error("another certificate served after a failed renewal, want the old one until it expires")
	}
	if got := logs.count("certificate failed", "host=r.example.test", "key=ecdsa", "ca="+p.DirectoryURL,
		"challenge=tls-alpn-01", "problem_type=urn:ietf:params:acme:error:unauthorized", "failures=1"); got != 1 {
		t.Errorf("%d \"certificate failed\" records with host, ca, challenge, problem, want 1; log:\n%s", got, logs)
	}
	orders := p.Orders()
	clk.Set(failedAt.Add(backoffMin - time.Second))
	waitPass(t, m)
	if got := p.Orders(); got != orders {
		t.Errorf("%d orders before the backoff ended, want none", got-orders)
	}

	// The CA can validate again: the retry after the backoff succeeds.
	ln2, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln2, m.TLSConfig("http/1.1"))
	clk.Set(failedAt.Add(backoffMin))
	waitFor(t, "the retried renewal", func() bool { return !served(t, m, "r.example.test").Equal(second) })
	st = statusOfHost(m, "r.example.test")
	if st.Failures != 0 || st.LastError != "" {
		t.Errorf("Status after a successful retry = %+v, want no failure", st)
	}
}

// TestRemovedNameStopsRenewing: a name dropped from the allow-list is not
// renewed, the others are (here past the emergency line, an hour before
// expiry, whatever ARI says).
func TestRemovedNameStopsRenewing(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	// Ahead of the CA's clock, so its certificates are valid at once.
	clk := newFakeClock(time.Now().Add(time.Hour))
	m, logs := pebbleClockManager(t, p, clk, false, "keep.example.test", "drop.example.test")
	listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))
	keep := served(t, m, "keep.example.test")
	served(t, m, "drop.example.test")
	if got := p.Orders(); got != 2 {
		t.Fatalf("%d orders, want 2", got)
	}
	m.SetHosts([]string{"keep.example.test"})
	clk.Set(keep.NotAfter.Add(-time.Hour))
	waitFor(t, "the renewal", func() bool { return !served(t, m, "keep.example.test").Equal(keep) })
	waitPass(t, m)
	if got := p.Orders(); got != 3 {
		t.Errorf("%d orders, want 3 (the dropped name not renewed)", got)
	}
	if got := logs.count("certificate renewed", "host=drop.example.test"); got != 0 {
		t.Errorf("dropped name renewed %d times", got)
	}
}

// TestConcurrentFirstHandshakesOrderOnce: many handshakes for a new name
// make one order.
func TestConcurrentFirstHandshakesOrderOnce(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	m, _ := pebbleManager(t, p, t.TempDir(), "many.example.test")
	addr := listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))
	roots := p.IssuerRoots(t)
	var wg sync.WaitGroup
	serials := make([]string, 10)
	for i := range serials {
		wg.Go(func() {
			cs, err := handshake(addr, &tls.Config{ServerName: "many.example.test", RootCAs: roots})
			if err != nil {
				t.Errorf("handshake %d: %v", i, err)
				return
			}
			serials[i] = cs.PeerCertificates[0].SerialNumber.String()
		})
	}
	wg.Wait()
	if got := p.Orders(); got != 1 {
		t.Errorf("%d orders for 10 simultaneous first handshakes, want 1", got)
	}
	for _, s := range serials[1:] {
		if s != serials[0] {
			t.Errorf("handshakes got different certificates: %q", serials)
			break
		}
	}
}
