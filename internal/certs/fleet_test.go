package certs_test

// Fleet tests: three Managers on one etcd cluster (internal/etcdstore),
// Pebble in-process, and a TCP forwarder on Pebble's validation ports as
// the balancer in front of the nodes.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/etcdstore"
	"github.com/leproxy/leproxy/internal/testenv"
	"golang.org/x/crypto/acme"
)

// fleetTTL is the nodes' session TTL: a dead node's locks free in 2 s.
const fleetTTL = 2 * time.Second

// fleetNode is one leproxy node of a test fleet.
type fleetNode struct {
	name   string
	store  *etcdstore.Store
	m      *certs.Manager
	tlsLn  net.Listener
	httpLn net.Listener
	placed atomic.Int64 // orders this node placed
	logs   *logRecords  // the node's log records
}

// fleet is the nodes and the balancer in front of their validation ports.
type fleet struct {
	pebble  *testenv.Pebble
	etcd    *testenv.Etcd
	nodes   []*fleetNode
	bal     *balancer
	proxies []*tcpProxy // node 0's way to etcd
}

// cut partitions node 0 from etcd: every connection through its proxies
// ends, and new ones are refused.
func (f *fleet) cut() {
	for _, px := range f.proxies {
		px.cut()
	}
}

// tcpProxy forwards connections to one address until cut.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	isCut  bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		px.cut()
		ln.Close()
		px.wg.Wait()
	})
	px.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			px.wg.Go(func() { px.forward(c) })
		}
	})
	return px
}

func (px *tcpProxy) addr() string { return px.ln.Addr().String() }

// track records c, or closes it when the proxy is cut.
func (px *tcpProxy) track(c net.Conn) bool {
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.isCut {
		c.Close()
		return false
	}
	px.conns[c] = true
	return true
}

func (px *tcpProxy) cut() {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.isCut = true
	for c := range px.conns {
		c.Close()
	}
}

func (px *tcpProxy) forward(c net.Conn) { px.forwardTo(c, px.target) }

// forwardTo pipes c to a new connection to target until either side
// closes or the proxy is cut.
func (px *tcpProxy) forwardTo(c net.Conn, target string) {
	defer c.Close()
	if !px.track(c) {
		return
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !px.track(up) {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.Close()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}

// startFleet starts etcd (3 members), Pebble, the balancer and n nodes
// serving hosts. Node 0 reaches etcd through cuttable proxies (fleet.cut).
func startFleet(t *testing.T, n int, hosts ...string) *fleet {
	t.Helper()
	return startFleetWith(t, n, nil, hosts...)
}

// startFleetWith is startFleet that calls configure, if not nil, on node
// i's Config before its Manager is made.
func startFleetWith(t *testing.T, n int, configure func(i int, cfg *certs.Config), hosts ...string) *fleet {
	t.Helper()
	e := testenv.StartEtcd(t, 3)
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	f := &fleet{pebble: p, etcd: e, bal: &balancer{}}
	endpoints, prefix, err := etcdstore.ParseURL(e.StoreURL("fleet"))
	if err != nil {
		t.Fatal(err)
	}
	var proxied []string
	for _, ep := range endpoints {
		px := startProxy(t, ep)
		f.proxies = append(f.proxies, px)
		proxied = append(proxied, px.addr())
	}
	for i := range n {
		nd := &fleetNode{name: "node" + strconv.Itoa(i), logs: &logRecords{}}
		dir := t.TempDir()
		eps := endpoints
		if i == 0 {
			eps = proxied
		}
		nd.store, err = etcdstore.Open(etcdstore.Options{
			Endpoints: eps, Prefix: prefix, Mirror: certs.NewDirStorage(dir),
			Node: nd.name, SessionTTL: fleetTTL,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.store.Close() })
		cfg := certs.Config{
			CacheDir:     dir,
			DirectoryURL: p.DirectoryURL,
			RootCAs:      p.ServerRoots,
			Storage:      nd.store,
			Logger:       slog.New(slog.NewTextHandler(testWriter{t, nd.name, nd.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnACMEEvent: func(ev certs.ACMEEvent) {
				if ev.Kind == certs.ACMEOrderPlaced {
					nd.placed.Add(1)
				}
			},
		}
		if configure != nil {
			configure(i, &cfg)
		}
		nd.m, err = certs.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.m.Close() })
		nd.m.SetHosts(hosts)
		nd.tlsLn = serveNode(t, &http.Server{TLSConfig: nd.m.TLSConfig("http/1.1"), Handler: http.NotFoundHandler()}, true)
		nd.httpLn = serveNode(t, &http.Server{Handler: nd.m.HTTPHandler(nil)}, false)
		f.nodes = append(f.nodes, nd)
		f.bal.add(nd.tlsLn.Addr().String(), nd.httpLn.Addr().String())
	}
	f.bal.listen(t, tlsPort, false)
	f.bal.listen(t, httpPort, true)
	return f
}

// testWriter sends a node's log to t.Log (shown for a failing test) and
// keeps its records.
type testWriter struct {
	t    *testing.T
	name string
	logs *logRecords
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + string(p))
	w.logs.add(string(p))
	return len(p), nil
}

// logRecords is a node's log records (the text handler's lines); safe for
// concurrent use.
type logRecords struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecords) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
}

// count returns how many records have message msg and contain every attr
// ("key=value" as the text handler writes it).
func (l *logRecords) count(msg string, attrs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.ContainsAny(msg, " =\"") {
		msg = strconv.Quote(msg)
	}
	n := 0
	for _, line := range l.lines {
		if !strings.Contains(line, " msg="+msg+" ") {
			continue
		}
		ok := true
		for _, a := range attrs {
			ok = ok && strings.Contains(line, " "+a)
		}
		if ok {
			n++
		}
	}
	return n
}

// serveNode serves srv on a new loopback listener (TLS with its
// TLSConfig if tlsOn) until the test ends.
func serveNode(t *testing.T, srv *http.Server, tlsOn bool) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.ReadHeaderTimeout = 10 * time.Second
	srv.ErrorLog = nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsOn {
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln
}

// balancer forwards each validation connection Pebble makes to the next
// node that is up, round robin, and counts them per node.
type balancer struct {
	mu    sync.Mutex
	tls   []string
	http  []string
	down  []bool
	next  int
	count []int
}

func (b *balancer) add(tlsAddr, httpAddr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tls = append(b.tls, tlsAddr)
	b.http = append(b.http, httpAddr)
	b.down = append(b.down, false)
	b.count = append(b.count, 0)
}

// setDown takes node i out of the balancer (or puts it back).
func (b *balancer) setDown(i int, down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down[i] = down
}

// counts returns the validation connections each node got.
func (b *balancer) counts() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.count...)
}

func (b *balancer) pick(http bool) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range len(b.tls) {
		i := b.next % len(b.tls)
		b.next++
		if b.down[i] {
			continue
		}
		b.count[i]++
		if http {
			return b.http[i], true
		}
		return b.tls[i], true
	}
	return "", false
}

// listen forwards 127.0.0.1:port until the test ends.
func (b *balancer) listen(t *testing.T, port int, http bool) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	px := &tcpProxy{ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		px.cut()
		ln.Close()
		px.wg.Wait()
	})
	px.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			addr, ok := b.pick(http)
			if !ok {
				c.Close()
				continue
			}
			px.wg.Go(func() { px.forwardTo(c, addr) })
		}
	})
}

// hello is a ClientHello for name from an ECDSA-capable client.
func hello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{ServerName: name, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
}

// serial returns the serial of the certificate node serves for name from
// memory or Storage, without ordering ("" if none).
func (nd *fleetNode) serial(name string) string {
	c, err := nd.m.GetCertificate(hello(name))
	if err != nil {
		return ""
	}
	return c.Leaf.SerialNumber.String()
}

// handshake makes a real TLS handshake with node's listener for name and
// returns the served leaf.
func (nd *fleetNode) handshake(name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", nd.tlsLn.Addr().String(), &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// within polls cond until it holds or d passes; it returns how long it
// took, failing the test if it never held.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFleetSimultaneousFirstHandshakes: every node gets a first handshake
// for a new name at once → one order and one finalize at the CA, and every
// node serves the same certificate.
func TestFleetSimultaneousFirstHandshakes(t *testing.T) {
	f := startFleet(t, 3, "one.example.test")
	roots := f.pebble.IssuerRoots(t)
	const perNode = 5
	var wg sync.WaitGroup
	serials := make(chan string, 3*perNode)
	errs := make(chan error, 3*perNode)
	for _, nd := range f.nodes {
		for range perNode {
			wg.Go(func() {
				leaf, err := nd.handshake("one.example.test", roots)
				if err != nil {
					errs <- err
					return
				}
				serials <- leaf.SerialNumber.String()
			})
		}
	}
	wg.Wait()
	close(errs)
	close(serials)
	for err := range errs {
		t.Errorf("handshake: %v", err)
	}
	seen := map[string]bool{}
	for s := range serials {
		seen[s] = true
	}
	if len(seen) != 1 {
		t.Errorf("%d different serials served, want 1: %v", len(seen), seen)
	}
	if got := f.pebble.Orders(); got != 1 {
		t.Errorf("Pebble got %d orders, want 1", got)
	}
	if got := f.pebble.Finalizes(); got != 1 {
		t.Errorf("Pebble got %d finalizes, want 1", got)
	}
}

// TestFleetAnswersForAnotherNode: the node that placed the order leaves
// the balancer before the CA validates; another node answers the
// validation from the store → still one order.
func TestFleetAnswersForAnotherNode(t *testing.T) {
	f := startFleet(t, 3, "other.example.test")
	defer certs.SetChallengeHook(func(host, typ string) {
		f.bal.setDown(0, true) // node0 places the order: it is gone for the CA
	})()
	c, err := f.nodes[0].m.GetCertificate(hello("other.example.test"))
	if err != nil {
		t.Fatalf("node0's certificate: %v", err)
	}
	if got := f.pebble.Orders(); got != 1 {
		t.Errorf("Pebble got %d orders, want 1", got)
	}
	counts := f.bal.counts()
	if counts[0] != 0 || counts[1]+counts[2] == 0 {
		t.Errorf("validation connections per node = %v, want none to node0 and some to the others", counts)
	}
	for _, nd := range f.nodes[1:] {
		if got := nd.serial("other.example.test"); got != c.Leaf.SerialNumber.String() {
			t.Errorf("%s serves serial %q, want node0's %s", nd.name, got, c.Leaf.SerialNumber)
		}
	}
	if got := f.pebble.Orders(); got != 1 {
		t.Errorf("Pebble got %d orders after every node served, want 1", got)
	}
}

// TestFleetHTTP01AnsweredByAnyNode: an http-01 answer one node published
// is served by another node's HTTP handler.
func TestFleetHTTP01AnsweredByAnyNode(t *testing.T) {
	f := startFleet(t, 2, "h.example.test")
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	if err := f.nodes[0].store.PutChallenge(context.Background(), token+"+http-01", []byte(token+".thumb"), time.Minute); err != nil {
		t.Fatal(err)
	}
	get := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+f.nodes[1].httpLn.Addr().String()+"/.well-known/acme-challenge/"+token, nil)
		req.Host = "h.example.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	if code, body := get(token); code != http.StatusOK || body != token+".thumb" {
		t.Errorf("node1 answered %d %q, want 200 with node0's key authorization", code, body)
	}
	// Not a token: never looked up.
	if err := f.nodes[0].store.PutChallenge(context.Background(), "short+http-01", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("short"); code != http.StatusNotFound {
		t.Errorf("a path that is no ACME token answered %d, want 404", code)
	}
}

// TestFleetPlacerDiesBeforeValidation: the node that placed the order dies
// (cut from etcd, so its session is no longer kept alive, and it never
// tells the CA to validate) → another node takes the lock once the TTL
// expires and places one more order, which succeeds.
func TestFleetPlacerDiesBeforeValidation(t *testing.T) {
	f := startFleet(t, 3, "dies.example.test")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the Managers close (cleanups run last first)
	var first atomic.Bool
	defer certs.SetChallengeHook(func(host, typ string) {
		if first.CompareAndSwap(false, true) {
			f.bal.setDown(0, true)
			f.cut()   // node0's session is no longer kept alive
			<-release // node0 is gone: it never goes on
		}
	})()
	go f.nodes[0].m.GetCertificate(hello("dies.example.test"))
	within(t, time.Minute, "node0 placed the order", func() bool { return first.Load() })
	start := time.Now()
	c, err := f.nodes[1].m.GetCertificate(hello("dies.example.test"))
	if err != nil {
		t.Fatalf("node1's certificate after node0 died: %v", err)
	}
	t.Logf("node1 got the certificate %v after node0 died (TTL %v)", time.Since(start), fleetTTL)
	if got := f.pebble.Orders(); got > 2 {
		t.Errorf("Pebble got %d orders, want at most 2 (one extra)", got)
	}
	if got := f.nodes[2].serial("dies.example.test"); got != c.Leaf.SerialNumber.String() {
		t.Errorf("node2 serves %q, want node1's %s", got, c.Leaf.SerialNumber)
	}
}

// TestFleetRenewal: a renewal on one node reaches every node within a
// second (the watch); a renewal due on every node at once is one order.
func TestFleetRenewal(t *testing.T) {
	f := startFleet(t, 3, "renew.example.test")
	const name = "renew.example.test"
	first, err := f.nodes[0].m.GetCertificate(hello(name))
	if err != nil {
		t.Fatal(err)
	}
	old := first.Leaf.SerialNumber.String()
	for _, nd := range f.nodes {
		if got := nd.serial(name); got != old {
			t.Fatalf("%s serves %q, want %s", nd.name, got, old)
		}
	}
	orders := f.pebble.Orders()
	f.nodes[1].m.RenewNow(name)
	within(t, 2*time.Minute, "node1 renewed", func() bool { s := f.nodes[1].serial(name); return s != "" && s != old })
	renewed := f.nodes[1].serial(name)
	d := within(t, time.Second, "every node serves the renewed certificate", func() bool {
		return f.nodes[0].serial(name) == renewed && f.nodes[2].serial(name) == renewed
	})
	t.Logf("renewal reached the other nodes %v after node1 served it", d)
	if got := f.pebble.Orders() - orders; got != 1 {
		t.Errorf("%d orders for one renewal, want 1", got)
	}

	// Due everywhere at once: one node orders, the others adopt it.
	orders = f.pebble.Orders()
	for _, nd := range f.nodes {
		nd.m.RenewNow(name)
	}
	within(t, 2*time.Minute, "every node renewed", func() bool {
		s := f.nodes[0].serial(name)
		return s != renewed && s != "" && f.nodes[1].serial(name) == s && f.nodes[2].serial(name) == s
	})
	// The nodes that adopted may still be finishing; none orders.
	for _, nd := range f.nodes {
		within(t, time.Minute, nd.name+" done", func() bool { return statusOf(nd.m, name).NextAttempt.After(time.Now()) })
	}
	if got := f.pebble.Orders() - orders; got != 1 {
		t.Errorf("%d orders for a renewal due on three nodes, want 1", got)
	}
}

// TestFleetARIRenewal: the renewal TestARIRenewal drives through ARI, in
// a fleet. Every node holds the CA's renewal window of the certificate
// they share; the CA moves it into the past; at the next fetch (Pebble
// says Retry-After 6 h: every node's clock is moved to it at once) every
// node finds the renewal due → one order, which replaces the old
// certificate (Pebble refuses to replace it again), and every node
// serves the new certificate within a second of the first.
func TestFleetARIRenewal(t *testing.T) {
	const name = "ari.example.test"
	start := time.Now().Add(time.Hour)
	clocks := make([]*certs.FakeClock, 3)
	for i := range clocks {
		clocks[i] = certs.NewFakeClock(start)
	}
	f := startFleetWith(t, 3, func(i int, cfg *certs.Config) { cfg.SetClock(clocks[i]) }, name)

	first, err := f.nodes[0].m.GetCertificate(hello(name))
	if err != nil {
		t.Fatal(err)
	}
	s1 := first.Leaf.SerialNumber.String()
	for _, nd := range f.nodes {
		if got := nd.serial(name); got != s1 {
			t.Fatalf("%s serves %q, want %s", nd.name, got, s1)
		}
	}
	if got := f.pebble.Orders(); got != 1 {
		t.Fatalf("Pebble got %d orders for the first certificate, want 1", got)
	}
	id1, err := certs.ARICertID(first.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	// Every node holds the window of the certificate it serves, and its
	// next fetch is Retry-After (6 h) from when it was fetched.
	within(t, time.Minute, "every node holds the renewal window of "+s1, func() bool {
		for _, nd := range f.nodes {
			if id, _, ok := nd.m.ARIState(name); !ok || id != id1 {
				return false
			}
		}
		return true
	})
	var fetch time.Time
	for i, nd := range f.nodes {
		_, next, _ := nd.m.ARIState(name)
		if want := clocks[i].Now().Add(6 * time.Hour); next.Sub(want).Abs() > time.Minute {
			t.Errorf("%s fetches the renewal info next at %v, want about %v (Retry-After)", nd.name, next, want)
		}
		if next.After(fetch) {
			fetch = next
		}
	}

	// The CA moves the window into the past; nothing happens before the
	// next fetch.
	past := time.Now().Add(-2 * time.Hour).UTC()
	f.pebble.SetRenewalInfo(t, first.Leaf, `{"suggestedWindow":{"start":"`+past.Format(time.RFC3339)+`","end":"`+past.Add(time.Hour).Format(time.RFC3339)+`"}}`)
	for _, nd := range f.nodes {
		certs.WaitPass(t, nd.m)
	}
	if got := f.pebble.Orders(); got != 1 {
		t.Fatalf("%d orders before the next renewal info fetch, want 1", got)
	}
	for _, nd := range f.nodes {
		if got := nd.serial(name); got != s1 {
			t.Fatalf("%s serves %q before the next renewal info fetch, want %s", nd.name, got, s1)
		}
	}
	placed := make([]int64, len(f.nodes))
	for i, nd := range f.nodes {
		placed[i] = nd.placed.Load()
	}

	// The next fetch, on every node at once.
	for _, c := range clocks {
		c.Set(fetch)
	}
	var firstNode *fleetNode
	var s2 string
	within(t, 2*time.Minute, "a node serves a renewed certificate", func() bool {
		for _, nd := range f.nodes {
			if s := nd.serial(name); s != "" && s != s1 {
				firstNode, s2 = nd, s
				return true
			}
		}
		return false
	})
	d := within(t, time.Second, "every node serves "+s2, func() bool {
		for _, nd := range f.nodes {
			if nd.serial(name) != s2 {
				return false
			}
		}
		return true
	})
	t.Logf("%s served the renewed certificate first; every node %v later", firstNode.name, d)

	// Every node is done with the renewal (it holds the new certificate's
	// window and its next attempt is ahead) and orders no more.
	leaf, err := f.nodes[0].m.GetCertificate(hello(name))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := certs.ARICertID(leaf.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	for i, nd := range f.nodes {
		within(t, time.Minute, nd.name+" holds the renewal window of "+s2, func() bool {
			id, _, ok := nd.m.ARIState(name)
			return ok && id == id2 && statusOf(nd.m, name).NextAttempt.After(clocks[i].Now())
		})
		certs.WaitPass(t, nd.m)
	}
	if got := f.pebble.Orders(); got != 2 {
		t.Errorf("%d orders for an ARI renewal due on three nodes, want 1", got-1)
	}
	var orderer *fleetNode
	for i, nd := range f.nodes {
		n := nd.placed.Load() - placed[i]
		renewed := nd.logs.count("certificate renewed", "host="+name, "replaces="+id1)
		switch {
		case n == 1 && renewed == 1 && orderer == nil:
			orderer = nd
		case n == 0 && renewed == 0:
		default:
			t.Errorf("%s placed %d orders and logged %d renewals with replaces=%s, want one node with one of each", nd.name, n, renewed, id1)
		}
		if got := nd.logs.count("order replacing a certificate refused"); got != 0 {
			t.Errorf("Pebble refused %s's order with replaces", nd.name)
		}
	}
	if orderer == nil {
		t.Fatalf("no node renewed with replaces=%s", id1)
	}
	t.Logf("%s ordered the renewal with replaces=%s", orderer.name, id1)
	// Pebble marked the first certificate replaced: replacing it again is
	// refused.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = orderer.m.OrderReplacing(ctx, name, id1)
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.ProblemType != certs.ErrAlreadyReplaced {
		t.Errorf("second order replacing %s: %v, want %s", id1, err, certs.ErrAlreadyReplaced)
	}
}

// TestFleetSharedSchedule: a renewal on one node reaches the others with
// its schedule (the ARI time that node picked and stored), so every node
// follows one schedule rather than a random time of its own.
func TestFleetSharedSchedule(t *testing.T) {
	f := startFleet(t, 3, "sched.example.test")
	const name = "sched.example.test"
	if _, err := f.nodes[0].m.GetCertificate(hello(name)); err != nil {
		t.Fatal(err)
	}
	for _, nd := range f.nodes[1:] {
		if nd.serial(name) == "" {
			t.Fatalf("%s does not serve %s", nd.name, name)
		}
	}
	old := f.nodes[0].serial(name)
	f.nodes[0].m.RenewNow(name)
	within(t, 2*time.Minute, "every node serves the renewed certificate", func() bool {
		s := f.nodes[0].serial(name)
		return s != old && s != "" && f.nodes[1].serial(name) == s && f.nodes[2].serial(name) == s
	})
	// Each node would pick its own random time in the CA's two-day window.
	var at time.Time
	within(t, 30*time.Second, "one renewal time on every node", func() bool {
		at = statusOf(f.nodes[0].m, name).NextAttempt
		return !at.IsZero() && statusOf(f.nodes[1].m, name).NextAttempt.Equal(at) && statusOf(f.nodes[2].m, name).NextAttempt.Equal(at)
	})
	t.Logf("every node renews at %v", at)
}

// statusOf returns the Manager's status of host.
func statusOf(m *certs.Manager, host string) certs.Status {
	for _, s := range m.Status() {
		if s.Host == host {
			return s
		}
	}
	return certs.Status{}
}

// TestFleetEtcdDown: with every etcd member stopped, held names keep
// serving and a new name fails in under 3 s; once etcd is back, the new
// name is ordered exactly once.
func TestFleetEtcdDown(t *testing.T) {
	f := startFleet(t, 3, "held.example.test", "new.example.test")
	roots := f.pebble.IssuerRoots(t)
	if _, err := f.nodes[0].m.GetCertificate(hello("held.example.test")); err != nil {
		t.Fatal(err)
	}
	for _, nd := range f.nodes {
		if _, err := nd.handshake("held.example.test", roots); err != nil {
			t.Fatalf("%s before the outage: %v", nd.name, err)
		}
	}
	orders := f.pebble.Orders()
	f.etcd.StopAll()
	for _, nd := range f.nodes {
		start := time.Now()
		if _, err := nd.handshake("held.example.test", roots); err != nil {
			t.Errorf("%s: held name with etcd down: %v", nd.name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: held name took %v with etcd down, want no wait on etcd", nd.name, d)
		}
	}
	for _, nd := range f.nodes {
		start := time.Now()
		_, err := nd.m.GetCertificate(hello("new.example.test"))
		d := time.Since(start)
		if err == nil {
			t.Fatalf("%s: a new name got a certificate with etcd down", nd.name)
		}
		if d > 3*time.Second {
			t.Errorf("%s: a new name failed after %v with etcd down, want under 3 s", nd.name, d)
		}
		t.Logf("%s: new name failed in %v: %v", nd.name, d, err)
	}
	if got := f.pebble.Orders(); got != orders {
		t.Errorf("%d orders with etcd down, want none", got-orders)
	}
	f.etcd.RestartAll()
	var c *tls.Certificate
	within(t, time.Minute, "a certificate for the new name after etcd returned", func() bool {
		var err error
		c, err = f.nodes[1].m.GetCertificate(hello("new.example.test"))
		return err == nil
	})
	for _, nd := range []*fleetNode{f.nodes[0], f.nodes[2]} {
		var got string
		within(t, time.Minute, nd.name+" serves the new name", func() bool {
			got = nd.serial("new.example.test")
			return got != ""
		})
		if got != c.Leaf.SerialNumber.String() {
			t.Errorf("%s serves %s, want %s", nd.name, got, c.Leaf.SerialNumber)
		}
	}
	if got := f.pebble.Orders() - orders; got != 1 {
		t.Errorf("%d orders after etcd returned, want exactly 1", got)
	}
}
