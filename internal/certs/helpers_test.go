package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// handshakeTimeout bounds every test handshake; issuing by Pebble takes
// about a second, but an RSA key under -race on a loaded machine has taken
// 45 s, so this is only a guard against hangs.
const handshakeTimeout = 4 * time.Minute

// logBuffer collects a logger's output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many records have message msg and contain every attr
// ("key=value" as the text handler writes it).
func (b *logBuffer) count(msg string, attrs ...string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		if !strings.Contains(line, "msg="+quoteIfNeeded(msg)+" ") {
			continue
		}
		ok := true
		for _, a := range attrs {
			if !strings.Contains(line, " "+a) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " =\"") {
		return `"` + s + `"`
	}
	return s
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// newTestManager calls New and closes the Manager in t.Cleanup.
func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fakeClock is a clock that moves only when Set: its timers fire when it
// is set at or past their time.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	waiters map[*fakeTimer]struct{}
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

var _ clock = (*fakeClock)(nil)

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{t: t, waiters: make(map[*fakeTimer]struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) At(t time.Time) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &fakeTimer{at: t, ch: make(chan time.Time, 1)}
	if !c.t.Before(t) {
		w.ch <- c.t
		return w.ch, func() {}
	}
	c.waiters[w] = struct{}{}
	return w.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.waiters, w)
	}
}

// Set moves the clock to t and fires the timers due by then.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
	for w := range c.waiters {
		if !t.Before(w.at) {
			w.ch <- t
			delete(c.waiters, w)
		}
	}
}

// serveTLS accepts connections on ln and runs the server side of a TLS
// handshake with cfg on each, until the test ends.
func serveTLS(t *testing.T, ln net.Listener, cfg *tls.Config) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(handshakeTimeout))
				if tc.Handshake() == nil {
					// Let the client finish reading before the close.
					var b [1]byte
					tc.Read(b[:])
				}
			})
		}
	})
}

// listenTLS listens on addr ("127.0.0.1:0" or a fixed port) and serves TLS
// handshakes with cfg; it returns the listener's address.
func listenTLS(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	serveTLS(t, ln, cfg)
	return ln.Addr().String()
}

// handshake dials addr, completes a TLS handshake with cfg and returns the
// connection state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}

// ecdsaHello is a ClientHello of a client that supports ECDSA.
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:   name,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	}
}

// readRoots reads a PEM file into a pool.
func readRoots(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("no certificate in %s", path)
	}
	return pool
}

// readCert reads the first certificate of a PEM file.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("no PEM in %s", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	return c
}

// verifyChain verifies a served chain (leaf first) for name against roots.
func verifyChain(chain [][]byte, name string, roots *x509.CertPool) error {
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}
