package dbtest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ServeFake accepts connections on l until the test ends and serves each
// in its own goroutine under a deadline of d; onAccept, if not nil, runs
// for each accepted connection. Cleanup closes l and every open connection
// and waits for the goroutines.
func ServeFake(t testing.TB, l net.Listener, d time.Duration, onAccept func(), serve func(net.Conn)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if onAccept != nil {
				onAccept()
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				c.SetDeadline(time.Now().Add(d))
				serve(c)
			}()
		}
	}()
}

// An Echo is a backend that answers each line it reads with its name, a
// colon and the line, in plaintext or over TLS, and closes when the
// client half-closes.
type Echo struct {
	Name string
	Addr string
}

// StartEcho starts an Echo named name, over TLS with cert when cert is not
// nil.
func StartEcho(t testing.TB, name string, cert *tls.Certificate) *Echo {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	e := &Echo{Name: name, Addr: l.Addr().String()}
	ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) { EchoLines(c, name) })
	return e
}

// EchoLines answers each line read from c with name, a colon and the
// line, until EOF or an error. A fake backend of any protocol calls it
// once the protocol's session setup is done, for Conformance.
func EchoLines(c net.Conn, name string) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, name+":"+line); err != nil {
			return
		}
	}
}

// EchoLine sends line and returns the answer, without its newline.
func EchoLine(t testing.TB, c net.Conn, line string) string {
	t.Helper()
	got, err := ExchangeLine(c, line)
	if err != nil {
		t.Fatalf("exchanging %q: %v (got %q)", line, err, got)
	}
	return got
}

// ExchangeLine sends line and a newline on c and reads one line back,
// returned without its newline, within 10 s.
func ExchangeLine(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := readLine(c)
	return strings.TrimSuffix(got, "\n"), err
}

// readLine reads up to and including a newline one byte at a time, so
// that nothing after it is consumed.
func readLine(r io.Reader) (string, error) {
	var b []byte
	var one [1]byte
	for len(b) < 64<<10 {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			return string(b), err
		}
		b = append(b, one[0])
		if one[0] == '\n' {
			return string(b), nil
		}
	}
	return string(b), io.ErrShortBuffer
}

// A CountingConn counts the bytes read from and written to the connection
// under it, to check a proxy's byte counts against what a client really
// sent and received.
type CountingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *CountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *CountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// Counts returns the bytes read and written so far.
func (c *CountingConn) Counts() (read, written int64) { return c.read.Load(), c.written.Load() }

// Reset sets both counts back to zero, at the point from which a proxy
// counts (the end of a protocol's handshake).
func (c *CountingConn) Reset() {
	c.read.Store(0)
	c.written.Store(0)
}
