package dbproxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// pumpSetup is client ⇄ [c pump b] ⇄ backend over loopback TCP, with TLS
// between client and proxy when withTLS.
type pumpSetup struct {
	client, backend net.Conn
	c, b            net.Conn
	in, out         atomic.Uint64
}

func newPumpSetup(t testing.TB, withTLS bool) *pumpSetup {
	t.Helper()
	ps := &pumpSetup{}
	client, c := tcpPair(t)
	b, backend := tcpPair(t)
	ps.client, ps.c, ps.b, ps.backend = client, c, b, backend
	if withTLS {
		cert, pool := selfSigned(t, "p.test")
		sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		cc := tls.Client(client, &tls.Config{ServerName: "p.test", RootCAs: pool})
		errc := make(chan error, 1)
		go func() { errc <- sc.Handshake() }()
		if err := cc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		ps.client, ps.c = cc, sc
	}
	return ps
}

// run pumps in the background and returns the result channel.
type pumpResult struct {
	in, out int64
	err     error
	end     End
}

func (ps *pumpSetup) run(lim pumpLimits) <-chan pumpResult {
	res := make(chan pumpResult, 1)
	abort := func() {
		for _, c := range []net.Conn{ps.c, ps.b} {
			if tc, ok := c.(*tls.Conn); ok {
				tc.NetConn().Close()
			} else {
				c.Close()
			}
		}
	}
	go func() {
		in, out, end, err := pump(ps.c, ps.b, lim, &ps.in, &ps.out, nil, abort)
		res <- pumpResult{in, out, err, end}
	}()
	return res
}

func waitResult(t testing.TB, res <-chan pumpResult) pumpResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("pump did not return")
		return pumpResult{}
	}
}

func TestPumpHalfClose(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			ps := newPumpSetup(t, withTLS)
			res := ps.run(pumpLimits{idle: time.Hour, halfClosed: time.Hour})
			request := bytes.Repeat([]byte("q"), 100000)
			response := bytes.Repeat([]byte("r"), 300000)

			// The client sends its request and closes its side; the
			// backend reads it to EOF and only then answers.
			write(t, ps.client, request)
			if err := CloseWrite(ps.client); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(ps.backend)
			if err != nil || !bytes.Equal(got, request) {
				t.Fatalf("backend read %d bytes, %v; want %d bytes then EOF", len(got), err, len(request))
			}
			write(t, ps.backend, response)
			ps.backend.Close()
			got, err = io.ReadAll(ps.client)
			if err != nil || !bytes.Equal(got, response) {
				t.Fatalf("client read %d bytes, %v; want %d bytes then EOF", len(got), err, len(response))
			}
			r := waitResult(t, res)
			if r.err != nil || r.in != int64(len(request)) || r.out != int64(len(response)) {
				t.Errorf("pump: got %d in, %d out, %v; want %d, %d, nil", r.in, r.out, r.err, len(request), len(response))
			}
			if ps.in.Load() != uint64(len(request)) || ps.out.Load() != uint64(len(response)) {
				t.Errorf("counters: got %d in, %d out; want %d, %d", ps.in.Load(), ps.out.Load(), len(request), len(response))
			}
		})
	}
}

func TestPumpIdle(t *testing.T) {
	t.Run("silence ends the session", func(t *testing.T) {
		ps := newPumpSetup(t, false)
		res := ps.run(pumpLimits{idle: 200 * time.Millisecond})
		r := waitResult(t, res)
		if !errors.Is(r.err, errIdle) {
			t.Fatalf("got %v, want the idle timeout", r.err)
		}
		// Both peers see the connection go.
		ps.client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := ps.client.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("client read: got %v, want the connection closed", err)
		}
	})
	t.Run("traffic one way keeps it alive", func(t *testing.T) {
		// Plain TCP both sides: the splice path, sampled by deadlines.
		ps := newPumpSetup(t, false)
		res := ps.run(pumpLimits{idle: time.Second})
		go io.Copy(io.Discard, ps.backend)
		for range 30 {
			write(t, ps.client, []byte("tick"))
			time.Sleep(100 * time.Millisecond)
		}
		select {
		case r := <-res:
			t.Fatalf("pump ended during traffic: %v", r.err)
		default:
		}
		// The live counter catches up within a sampling round.
		poll(t, "the counter to reach 120", func() bool { return ps.in.Load() == 120 })
		r := waitResult(t, res) // silence now
		if !errors.Is(r.err, errIdle) || r.in != 120 {
			t.Errorf("got %d bytes, %v; want 120 and the idle timeout", r.in, r.err)
		}
	})
	t.Run("half-closed session times out sooner", func(t *testing.T) {
		ps := newPumpSetup(t, true)
		res := ps.run(pumpLimits{idle: time.Hour, halfClosed: 200 * time.Millisecond})
		ps.backend.Close() // the backend is gone; the client says nothing
		r := waitResult(t, res)
		if !errors.Is(r.err, errIdle) {
			t.Fatalf("got %v, want the idle timeout", r.err)
		}
	})
}

func TestPumpErrorAborts(t *testing.T) {
	ps := newPumpSetup(t, false)
	res := ps.run(pumpLimits{})
	// A reset from the backend ends both directions at once, even though
	// the client keeps its side open.
	ps.backend.(*net.TCPConn).SetLinger(0)
	write(t, ps.client, []byte("x"))
	ps.backend.Close()
	r := waitResult(t, res)
	if r.err == nil {
		t.Fatal("got no error, want the reset")
	}
	ps.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(ps.client); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("client side still open after the backend reset")
	}
}

// selfSigned is a certificate for name and a pool that trusts it. (The
// in-package tests cannot use dbtest, which imports this package.)
func selfSigned(t testing.TB, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func write(t testing.TB, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// poll waits for cond for up to 10 s.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestTrackedConnSplices checks that a backend connection from
// Session.Dial, which the session wraps to track it, still lets the pump
// splice.
func TestTrackedConnSplices(t *testing.T) {
	a, b := tcpPair(t)
	tc := &trackedConn{Conn: b}
	if !spliceable(unwrapConn(a), unwrapConn(tc)) {
		t.Error("a tracked TCP connection is not spliceable")
	}
	if spliceable(a, tc) {
		t.Error("spliceable saw through the wrapper by itself; the test checks nothing")
	}
}

// BenchmarkPump measures bulk throughput one way: straight over loopback
// TCP, through the pump with TCP on both sides (splice), and through the
// pump with TLS on the client side.
func BenchmarkPump(b *testing.B) {
	const chunk = 256 << 10
	buf := make([]byte, chunk)
	run := func(b *testing.B, client net.Conn, sink net.Conn) {
		done := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(io.Discard, sink)
			done <- n
		}()
		b.SetBytes(chunk)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		CloseWrite(client)
		if n := <-done; n != int64(b.N)*chunk {
			b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
		}
	}
	b.Run("direct", func(b *testing.B) {
		client, sink := tcpPair(b)
		run(b, client, sink)
	})
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "pump-tcp", true: "pump-tls"}[withTLS]
		b.Run(name, func(b *testing.B) {
			ps := newPumpSetup(b, withTLS)
			res := ps.run(pumpLimits{idle: DefaultIdleTimeout, halfClosed: halfClosedIdle})
			run(b, ps.client, ps.backend)
			ps.backend.Close()
			waitResult(b, res)
		})
	}
}

// TestPumpEnds checks who ended a session and how, and that what the side
// that went away sent before it went is delivered and counted exactly.
func TestPumpEnds(t *testing.T) {
	lim := pumpLimits{idle: time.Hour, halfClosed: halfClosedIdle}
	reset := func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	}
	tests := []struct {
		name    string
		tls     bool
		act     func(t *testing.T, ps *pumpSetup)
		want    End
		in, out int64
	}{{
		name: "client closes",
		act: func(t *testing.T, ps *pumpSetup) {
			write(t, ps.client, []byte("bye"))
			ps.client.Close()
			io.Copy(io.Discard, ps.backend)
			ps.backend.Close()
		},
		want: End{ByClient, ReasonClosed}, in: 3,
	}, {
		name: "backend closes",
		tls:  true,
		act: func(t *testing.T, ps *pumpSetup) {
			write(t, ps.backend, []byte("FATAL: terminated"))
			ps.backend.Close()
			io.Copy(io.Discard, ps.client)
			ps.client.Close()
		},
		want: End{ByBackend, ReasonClosed}, out: 17,
	}, {
		name: "backend resets after its last words",
		act: func(t *testing.T, ps *pumpSetup) {
			write(t, ps.backend, []byte("last words"))
			if _, err := io.ReadFull(ps.client, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			reset(ps.backend)
		},
		want: End{ByBackend, ReasonReset}, out: 10,
	}, {
		name: "client resets",
		tls:  false,
		act: func(t *testing.T, ps *pumpSetup) {
			write(t, ps.client, []byte("hello"))
			if _, err := io.ReadFull(ps.backend, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			reset(ps.client)
			// The backend goes on writing to the gone client.
			for i := 0; i < 100; i++ {
				if _, err := ps.backend.Write([]byte("more")); err != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
		},
		want: End{ByClient, ReasonReset}, in: 5,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := newPumpSetup(t, tt.tls)
			res := ps.run(lim)
			tt.act(t, ps)
			r := waitResult(t, res)
			if r.end != tt.want {
				t.Errorf("end %+v, want %+v (error %v)", r.end, tt.want, r.err)
			}
			if r.in != tt.in || (tt.out != 0 && r.out != tt.out) {
				t.Errorf("bytes in %d out %d, want %d and %d", r.in, r.out, tt.in, tt.out)
			}
		})
	}
}

// BenchmarkPumpPingPong measures the pgbench -S shape: the client sends a
// small request, the backend answers with a small reply, one at a time.
// Cases: straight over loopback TCP; two plain io.Copy goroutines between
// the client's TLS and the backend's TCP (the floor for a Go relay, as in
// bench/floor); the pump, TLS to plain TCP. Each op is one round trip.
func BenchmarkPumpPingPong(b *testing.B) {
	const reqSize, replySize = 40, 160
	roundTrips := func(b *testing.B, client, backend net.Conn) {
		b.Helper()
		go func() {
			req, reply := make([]byte, reqSize), make([]byte, replySize)
			for {
				if _, err := io.ReadFull(backend, req); err != nil {
					return
				}
				if _, err := backend.Write(reply); err != nil {
					return
				}
			}
		}()
		req, reply := make([]byte, reqSize), make([]byte, replySize)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := client.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(client, reply); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		client, backend := tcpPair(b)
		roundTrips(b, client, backend)
	})
	b.Run("iocopy-tls", func(b *testing.B) {
		ps := newPumpSetup(b, true)
		go func() { io.Copy(ps.b, ps.c); ps.b.Close() }()
		go func() { io.Copy(ps.c, ps.b); ps.c.Close() }()
		roundTrips(b, ps.client, ps.backend)
	})
	b.Run("pump-tls", func(b *testing.B) {
		ps := newPumpSetup(b, true)
		res := ps.run(pumpLimits{idle: DefaultIdleTimeout, halfClosed: halfClosedIdle})
		roundTrips(b, ps.client, ps.backend)
		ps.client.Close()
		ps.backend.Close()
		waitResult(b, res)
	})
}

// BenchmarkPumpBulkDown measures bulk throughput from the backend to a TLS
// client (a large result set): the pump reads TCP and writes TLS records.
func BenchmarkPumpBulkDown(b *testing.B) {
	const chunk = 256 << 10
	ps := newPumpSetup(b, true)
	res := ps.run(pumpLimits{idle: DefaultIdleTimeout, halfClosed: halfClosedIdle})
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, ps.client)
		done <- n
	}()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ps.backend.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	CloseWrite(ps.backend)
	if n := <-done; n != int64(b.N)*chunk {
		b.Fatalf("client got %d bytes, want %d", n, int64(b.N)*chunk)
	}
	ps.client.Close()
	waitResult(b, res)
}
