package ftp

// Passive data connections: a listener of leproxy's per PASV or EPSV, the
// client's connection on it (from the control connection's address only,
// its TLS resuming the control connection's session), the backend's data
// connection, and the relay between them.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// dataAcceptTimeout bounds the wait for the client's data connection after
// PASV or EPSV, as vsftpd's accept_timeout does.
const dataAcceptTimeout = 60 * time.Second

// errNotResumed is a client data connection whose TLS handshake did not
// resume the session of its control connection.
var errNotResumed = errors.New("data connection did not resume the control connection's TLS session")

// errDataClosed is the failure of a data connection that the control loop
// closed: its transfer is over, or a new PASV replaced it.
var errDataClosed = errors.New("data connection closed")

// A passive is one passive-mode data connection of a session, from its
// listener to the end of its relay; a goroutine of its own runs it.
type passive struct {
	c       *control
	ln      net.Listener
	port    int
	backend netip.AddrPort

	ready chan struct{} // closed when both sides are connected, TLS done
	done  chan struct{} // closed when the goroutine has ended
	err   error         // why it failed, nil for a relay that ended well; set before done

	mu     sync.Mutex
	conns  []net.Conn // to close on failure
	failed error      // set by fail
}

// listen opens a passive listener on ip and a free port of the listener's
// range, starting at a random one, and starts its goroutine.
func (c *control) listen(ip netip.Addr, backend netip.AddrPort) (*passive, error) {
	lo, hi := c.opts.minPort, c.opts.maxPort
	n := hi - lo + 1
	start := rand.IntN(n) // #nosec G404 -- spreads ports; not a secret
	for i := range n {
		port := lo + (start+i)%n
		ln, err := c.s.Listen("tcp", netip.AddrPortFrom(ip, uint16(port)).String())
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listening for a data connection: %w", err)
		}
		d := &passive{c: c, ln: ln, port: port, backend: backend, ready: make(chan struct{}), done: make(chan struct{})}
		go d.run()
		return d, nil
	}
	return nil, fmt.Errorf("listening for a data connection: every port of %d-%d is in use", lo, hi)
}

// run connects both sides and relays.
func (d *passive) run() {
	defer close(d.done)
	c, b, err := d.connect()
	if err == nil {
		close(d.ready)
		err = d.c.s.Pump(c, b)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		err = d.failed
	}
	if err != nil {
		for _, c := range d.conns {
			c.Close()
		}
	}
	d.err = err
}

// connect accepts the client's data connection, dials the backend's and
// runs TLS on both as the session needs.
func (d *passive) connect() (client, backend net.Conn, err error) {
	defer d.ln.Close()
	if tl, ok := d.ln.(interface{ SetDeadline(time.Time) error }); ok {
		tl.SetDeadline(time.Now().Add(dataAcceptTimeout))
	}
	ctx, cancel := context.WithTimeout(context.Background(), dataAcceptTimeout)
	defer cancel()
	// The backend's data connection first, at once: vsftpd sends its 150
	// only once it has its data connection, and some clients (lftp) start
	// their TLS only after the 150. A client that never connects then
	// costs the backend a transfer into the void, which leproxy reports
	// as 425.
	bconn, err := d.c.s.Dial(ctx, &dbproxy.Route{Backend: d.backend.String()})
	if err != nil {
		return nil, nil, err
	}
	if err := d.track(bconn); err != nil {
		return nil, nil, err
	}
	want, _ := netip.ParseAddrPort(d.c.s.ClientAddr().String())
	var conn net.Conn
	for {
		if conn, err = d.ln.Accept(); err != nil {
			return nil, nil, fmt.Errorf("accepting the data connection: %w", err)
		}
		got, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
		if got.Addr().Unmap() == want.Addr().Unmap() {
			break
		}
		d.c.s.Logger.Warn("ftp data connection from another address refused",
			"from", conn.RemoteAddr().String(), "port", d.port)
		conn.Close()
	}
	if err := d.track(conn); err != nil {
		return nil, nil, err
	}
	d.ln.Close()
	ctx, cancel = context.WithTimeout(context.Background(), d.c.s.HandshakeTimeout())
	defer cancel()
	hsDeadline, _ := ctx.Deadline()
	conn.SetDeadline(hsDeadline)
	bconn.SetDeadline(hsDeadline)
	client, backend = conn, bconn
	if d.c.tls {
		tc, err := d.c.s.ServerHandshakeConfig(ctx, conn, d.c.tlsCfg)
		if err != nil {
			return nil, nil, fmt.Errorf("data connection tls handshake: %w", err)
		}
		if !tc.ConnectionState().DidResume {
			if !d.c.opts.preferResume {
				return nil, nil, errNotResumed
			}
			d.c.s.Logger.Info("ftp data connection did not resume the control connection's TLS session: accepted (passive_resumption: prefer)")
		}
		client = tc
	}
	if d.c.btlsCfg != nil {
		tc := tls.Client(bconn, d.c.btlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("backend %s data connection tls handshake: %w", d.backend, err)
		}
		backend = tc
	}
	conn.SetDeadline(time.Time{})
	bconn.SetDeadline(time.Time{})
	return &oneWay{Conn: client}, &oneWay{Conn: backend}, nil
}

// oneWay is one side of a data connection for the pump. Data flows one
// way on an FTP data connection, so when the pump half-closes a side (its
// peer's direction ended: the file is through) the side is closed
// altogether, a TLS side after its close_notify, and reading it
// afterwards is EOF. The transfer then ends when the data does, even with
// a client that waits for the final reply before it closes its end.
type oneWay struct {
	net.Conn
	closed atomic.Bool
}

// CloseWrite closes the connection (a TLS one sends its close_notify).
func (c *oneWay) CloseWrite() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// Read is the connection's, EOF once CloseWrite has closed it.
func (c *oneWay) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.closed.Load() {
		return n, io.EOF
	}
	return n, err
}

// SetReadDeadline is the connection's, and no error once CloseWrite has
// closed it: the pump samples its progress with read deadlines, and a
// round may start as the other direction closes this side (checking the
// flag only before the call left that window open: a short LIST failed
// with "use of closed network connection" and 425).
func (c *oneWay) SetReadDeadline(t time.Time) error {
	err := c.Conn.SetReadDeadline(t)
	if err != nil && c.closed.Load() {
		return nil
	}
	return err
}

// track records a connection to close on failure; it fails when the
// passive has failed already.
func (d *passive) track(c net.Conn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		c.Close()
		return d.failed
	}
	d.conns = append(d.conns, c)
	return nil
}

// fail ends the data connection with err, closing its listener and
// connections; the first reason sticks.
func (d *passive) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed == nil {
		d.failed = err
	}
	d.ln.Close()
	for _, c := range d.conns {
		c.Close()
	}
}

// close ends the data connection, if it still runs, and waits for its
// goroutine.
func (d *passive) close() {
	select {
	case <-d.done:
	default:
		d.fail(errDataClosed)
		<-d.done
	}
}
