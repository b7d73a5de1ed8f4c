package httpproxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// statuses sends n GETs for url with header and counts the statuses; the
// last 429's Retry-After is returned.
func statuses(t *testing.T, c *http.Client, url string, header http.Header, n int) (counts map[int]int, retryAfter string) {
	t.Helper()
	counts = make(map[int]int)
	for range n {
		resp, _ := do(t, c, url, header)
		counts[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return counts, retryAfter
}

// TestRateLimit: "rate_limit: {requests: 10/s, burst: 20}" over a real TLS
// listener with a fake clock: a burst of 30 gets exactly 20 answers and
// 10 429s with Retry-After: 1; a second later 10 more go through. A
// slower host (2/m, burst 1) says Retry-After: 30. Limits are per host
// and per client.
func TestRateLimit(t *testing.T) {
	clk := newTestClock()
	var limited []string
	var mu sync.Mutex
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Clock: clk.Now})
	backend := startBackend(t, echoHandler("b"))
	fast := tcpHost("fast.example.com", backend)
	fast.RateLimit = config.RateLimit{Requests: 10, Burst: 20}
	slow := tcpHost("slow.example.com", backend)
	slow.RateLimit = config.RateLimit{Requests: 2.0 / 60, Burst: 1}
	free := tcpHost("free.example.com", backend)
	h := mustNew(t, []config.Host{fast, slow, free}, Options{Clients: clients, OnLimited: func(host, kind string) {
		mu.Lock()
		limited = append(limited, host+" "+kind)
		mu.Unlock()
	}})
	_, c := serve(t, h, false, false)

	counts, ra := statuses(t, c, "https://fast.example.com/", nil, 30)
	if counts[200] != 20 || counts[429] != 10 || ra != "1" {
		t.Fatalf("burst of 30 at 10/s burst 20: %v, Retry-After %q; want 20×200, 10×429, Retry-After 1", counts, ra)
	}
	if counts, _ := statuses(t, c, "https://free.example.com/", nil, 30); counts[200] != 30 {
		t.Errorf("host without rate_limit: %v", counts)
	}
	clk.Add(time.Second)
	if counts, _ := statuses(t, c, "https://fast.example.com/", nil, 15); counts[200] != 10 || counts[429] != 5 {
		t.Errorf("a second later, 15 requests: %v; want 10×200, 5×429", counts)
	}
	counts, ra = statuses(t, c, "https://slow.example.com/", nil, 2)
	if counts[200] != 1 || counts[429] != 1 || ra != "30" {
		t.Errorf("2/m burst 1, two requests: %v, Retry-After %q; want one 429 with Retry-After 30", counts, ra)
	}
	mu.Lock()
	if len(limited) != 16 || limited[0] != "fast.example.com rate" || limited[15] != "slow.example.com rate" {
		t.Errorf("OnLimited: %d calls, first %q", len(limited), limited)
	}
	mu.Unlock()

	// A reload that keeps fast's rate_limit keeps its buckets (empty);
	// one that changes slow's gives it new ones.
	slow.RateLimit.Burst = 2
	h2 := mustNew(t, []config.Host{fast, slow, free}, Options{Clients: clients, Previous: h})
	_, c2 := serve(t, h2, false, false)
	if counts, _ := statuses(t, c2, "https://fast.example.com/", nil, 1); counts[429] != 1 {
		t.Errorf("fast after a reload that kept its limit: %v, want its empty bucket (429)", counts)
	}
	if counts, _ := statuses(t, c2, "https://slow.example.com/", nil, 2); counts[200] != 2 {
		t.Errorf("slow after a reload that changed its limit: %v, want a fresh bucket of 2", counts)
	}
}

// TestRateLimitForwarded: X-Forwarded-For names the client only when the
// peer is a trusted proxy; the allow list is never limited.
func TestRateLimitForwarded(t *testing.T) {
	clk := newTestClock()
	backend := startBackend(t, echoHandler("b"))
	host := tcpHost("a.example.com", backend)
	host.RateLimit = config.RateLimit{Requests: 1, Burst: 1}
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {"198.51.100.99, " + a}} }

	untrusted := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Clock: clk.Now})
	_, c := serve(t, mustNew(t, []config.Host{host}, Options{Clients: untrusted}), false, false)
	a, _ := statuses(t, c, "https://a.example.com/", xff("203.0.113.1"), 1)
	b, _ := statuses(t, c, "https://a.example.com/", xff("203.0.113.2"), 1)
	if a[200] != 1 || b[429] != 1 {
		t.Errorf("untrusted peer: X-Forwarded-For believed (%v, %v)", a, b)
	}

	trusted := clientlimit.New(clientlimit.Policy{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Allow:          []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}, clientlimit.Options{Clock: clk.Now})
	_, c = serve(t, mustNew(t, []config.Host{host}, Options{Clients: trusted}), false, false)
	for _, client := range []string{"203.0.113.1", "203.0.113.2"} {
		if counts, _ := statuses(t, c, "https://a.example.com/", xff(client), 2); counts[200] != 1 || counts[429] != 1 {
			t.Errorf("trusted proxy for %s: %v, want one of two through", client, counts)
		}
	}
	if counts, _ := statuses(t, c, "https://a.example.com/", xff("192.0.2.5"), 5); counts[200] != 5 {
		t.Errorf("allow-listed client: %v, want all through", counts)
	}
}

// TestRateLimitInFlight: "in_flight: 2" refuses a third request while
// two are at the backend, with Retry-After: 1, and takes one again when
// one has finished.
func TestRateLimitInFlight(t *testing.T) {
	arrived := make(chan struct{}, 3)
	unblock := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-unblock
		io.WriteString(w, "done")
	}))
	host := tcpHost("a.example.com", backend)
	host.RateLimit = config.RateLimit{InFlight: 2}
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{})
	_, c := serve(t, mustNew(t, []config.Host{host}, Options{Clients: clients}), false, false)
	results := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := c.Get("https://a.example.com/")
			if err != nil {
				results <- 0
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	<-arrived
	<-arrived
	resp, _ := do(t, c, "https://a.example.com/", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("third in flight: %d, Retry-After %q; want 429, 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(unblock)
	for range 2 {
		if s := <-results; s != 200 {
			t.Errorf("a request in flight got %d", s)
		}
	}
	// The slots are given back when the proxy's handler returns, which
	// can come just after the client has read its response: poll for
	// it. A slot that is never given back fails at the deadline.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ := do(t, c, "https://a.example.com/", nil)
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after both finished: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startGuardedEdge is startEdge with a connection guard.
// The count of finished handshakes is returned with the address.
func startGuardedEdge(t *testing.T, h http.Handler, g ConnGuard) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}}
	srv := &http.Server{Handler: h, ConnContext: ConnContext, ReadHeaderTimeout: testTimeout}
	var n atomic.Int64
	tln := NewTLSListener(ln, TLSListenerOptions{Config: cfg, HandshakeTimeout: 2 * time.Second,
		Guard: func() ConnGuard { return g }, OnHandshake: func(error) { n.Add(1) }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), &n
}

// handshake dials addr and runs a TLS handshake.
func handshake(addr string) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "a.example.test"})
	if err != nil {
		return err
	}
	return c.Close()
}

// TestTLSListenerGuard: on the HTTPS listener, "block: {after: 3}" blocks
// a client after three failed handshakes (plaintext on the TLS port):
// its next connection is closed before any handshake, until the block is
// lifted. conns_per_client: 2 refuses a third open connection.
func TestTLSListenerGuard(t *testing.T) {
	blocks := clientlimit.NewBlocklist(clientlimit.BlocklistOptions{})
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Blocks: blocks})
	g := clients.Guard(clientlimit.GuardConfig{Listener: "https", Conns: clientlimit.Limits{Concurrent: 2},
		Block: clientlimit.BlockPolicy{After: 3, Window: time.Minute, For: time.Hour}})
	addr, handshakes := startGuardedEdge(t, http.NotFoundHandler(), clientlimit.NetGuard{Guard: g})

	if err := handshake(addr); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	// Connections closed before a byte (a browser's spare ones) are no
	// failures. (One at a time: conns_per_client is 2.)
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range 5 {
		waitUntil(t, "the previous handshake and release", func() bool {
			return handshakes.Load() == int64(i+1) && g.Active(lo) == 0
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitUntil(t, "six handshakes", func() bool { return handshakes.Load() == 6 })
	if l := blocks.List(); len(l) != 0 {
		t.Fatalf("silent connections blocked the client: %+v", l)
	}
	for range 3 {
		waitUntil(t, "the previous connection's release", func() bool { return g.Active(lo) == 0 })
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		io.ReadAll(c) // the listener's 400, then its close: the failure is counted by then
		c.Close()
	}
	waitUntil(t, "the block", func() bool { return len(blocks.List()) == 1 })
	if err := handshake(addr); err == nil {
		t.Fatal("handshake of a blocked client succeeded")
	}
	list := blocks.List()
	if list[0].Client != "127.0.0.1" || list[0].Reason != clientlimit.FailTLS || list[0].Until.Sub(list[0].Since) != time.Hour {
		t.Errorf("block = %+v", list[0])
	}
	key, _ := clientlimit.ParseKey("127.0.0.1", 0)
	blocks.Lift(key)
	if err := handshake(addr); err != nil {
		t.Fatalf("handshake after the lift: %v", err)
	}

	// Two open connections; the third is closed unanswered.
	waitUntil(t, "earlier connections to be released", func() bool { return g.Active(lo) == 0 })
	for range 2 {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if err := handshake(addr); err == nil {
		t.Error("a third open connection was taken with conns_per_client 2")
	}
}

// waitUntil polls cond until it holds or the test times out.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLSListenerFlood: 100,000 connections from as many distinct source
// addresses (127.0.0.0/8, each dialled from its own address) keep the
// guard's table within its bound (checked after each handshake) while
// every connection is still admitted and handled.
func TestTLSListenerFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 connections")
	}
	clientsN, bound := 100_000, 1000
	if raceEnabled {
		clientsN = 20_000 // 100,000 take 90 s under the race detector on two cores
	}
	clients := clientlimit.New(clientlimit.Policy{MaxClients: bound}, clientlimit.Options{})
	g := clients.Guard(clientlimit.GuardConfig{Listener: "https", Conns: clientlimit.Limits{Rate: 1, Burst: 1},
		Block: clientlimit.BlockPolicy{After: 5}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var handshakes sync.WaitGroup
	handshakes.Add(clientsN)
	var maxLen int
	var mu sync.Mutex
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	tln := NewTLSListener(ln, TLSListenerOptions{Config: cfg, HandshakeTimeout: testTimeout,
		Guard: func() ConnGuard { return clientlimit.NetGuard{Guard: g} },
		OnHandshake: func(error) {
			mu.Lock()
			maxLen = max(maxLen, g.Len())
			mu.Unlock()
			handshakes.Done()
		}})
	defer tln.Close()
	addr := ln.Addr().(*net.TCPAddr)

	const workers = 8
	var dialers sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		dialers.Go(func() {
			for i := w; i < clientsN; i += workers {
				n := i + 1<<16 // 127.1.0.0 onwards: clear of 127.0.0.1
				src := &net.TCPAddr{IP: net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))}
				c, err := net.DialTCP("tcp", src, addr)
				if err != nil {
					errs <- fmt.Errorf("dialling from %s: %w", src.IP, err)
					return
				}
				c.SetLinger(0) // no TIME_WAIT left behind
				c.Close()
			}
		})
	}
	dialers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	handshakes.Wait() // every connection was admitted and its handshake failed
	mu.Lock()
	defer mu.Unlock()
	if maxLen > bound || g.Len() > bound {
		t.Errorf("the table held up to %d clients (now %d), bound %d", maxLen, g.Len(), bound)
	}
	if g.Len() < bound/2 {
		t.Errorf("the table holds %d clients after the flood: not filled as expected", g.Len())
	}
}
