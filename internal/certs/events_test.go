package certs

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

// eventLog records ACMEEvents; safe for concurrent use.
type eventLog struct {
	mu     sync.Mutex
	events []ACMEEvent
}

func (l *eventLog) add(e ACMEEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) count(kind, host, challenge string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == kind && (host == "" || e.Host == host) && (challenge == "" || e.Challenge == challenge) {
			n++
		}
	}
	return n
}

// TestACMEEventsMatchPebble: the order, finalize and failure events match
// what Pebble saw: tls-alpn-01 fails (nothing listens), http-01 succeeds,
// then with neither answering the order fails.
func TestACMEEventsMatchPebble(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	var events eventLog
	m := newTestManager(t, Config{
		CacheDir:     t.TempDir(),
		DirectoryURL: p.DirectoryURL,
		RootCAs:      p.ServerRoots,
		OnACMEEvent:  events.add,
	})
	m.SetHosts([]string{"ev.example.test", "fail.example.test"})
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.HTTPHandler(http.NotFoundHandler()), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()

	if _, err := m.GetCertificate(ecdsaHello("ev.example.test")); err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if got, want := events.count(ACMEOrderPlaced, "ev.example.test", ""), p.Orders(); got != 2 || got != want {
		t.Errorf("%d order events, Pebble saw %d orders; want 2 of each (tls-alpn-01, then http-01)", got, want)
	}
	if got := events.count(ACMEOrderPlaced, "ev.example.test", challengeHTTP01); got != 1 {
		t.Errorf("%d http-01 order events, want 1", got)
	}
	if got := events.count(ACMEFinalized, "ev.example.test", challengeHTTP01); got != 1 {
		t.Errorf("%d finalize events, want 1", got)
	}
	if got := events.count(ACMEFailed, "", ""); got != 0 {
		t.Errorf("%d failure events for an order that succeeded (on its second challenge type), want 0", got)
	}

	srv.Close()
	<-done
	if _, err := m.GetCertificate(ecdsaHello("fail.example.test")); err == nil {
		t.Fatal("GetCertificate succeeded with no challenge answered")
	}
	if got := events.count(ACMEFailed, "fail.example.test", challengeHTTP01); got != 1 {
		t.Errorf("%d failure events naming http-01, want 1", got)
	}
	if got, want := events.count(ACMEOrderPlaced, "", ""), p.Orders(); got != want {
		t.Errorf("%d order events, Pebble saw %d orders", got, want)
	}
	if got := events.count(ACMEFinalized, "fail.example.test", ""); got != 0 {
		t.Errorf("%d finalize events for a failed order, want 0", got)
	}
}
