package dbproxy

import (
	"crypto/tls"
	"sync"
	"testing"
)

// TestOnTLSHandshake checks that the Server reports each client TLS
// handshake, successful or not, to Config.OnTLSHandshake.
func TestOnTLSHandshake(t *testing.T) {
	ca := newTestCA(t)
	var mu sync.Mutex
	var ok, failed int
	p := startProxy(t, ca, Config{
		Routes: []Route{{Host: "db.test", Backend: "127.0.0.1:1"}},
		OnTLSHandshake: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else {
				failed++
			}
		},
	})
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return ok, failed
	}

	sslRequest(t, p.dial(t), ca, "db.test", "db.test").Close()
	waitFor(t, "a successful handshake", func() bool { o, _ := counts(); return o == 1 })

	// A client that does not trust the certificate aborts the handshake.
	conn := p.dial(t)
	mustWrite(t, conn, requestBytes(sslRequestCode))
	if got := readByte(t, conn); got != 'S' {
		t.Fatalf("SSLRequest answer: got %q, want 'S'", got)
	}
	if err := tls.Client(conn, &tls.Config{ServerName: "db.test"}).Handshake(); err == nil {
		t.Fatal("handshake without the test CA succeeded")
	}
	waitFor(t, "a failed handshake", func() bool { _, f := counts(); return f == 1 })
	if o, f := counts(); o != 1 || f != 1 {
		t.Errorf("got %d successful and %d failed handshakes, want 1 and 1", o, f)
	}
}
