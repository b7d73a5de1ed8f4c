// Package redis is the Redis protocol of dbproxy: TLS from the first
// byte, then RESP piped to the backend, with Redis Cluster node addresses
// in replies rewritten to leproxy's routes.
//
// Its handshake is dbproxy's TLS-first one: the client's first byte must
// start a TLS handshake; the server name chooses the route, whose backend
// is dialled (over TLS when the route says so). A client refused on the
// way (plaintext, an unknown server name, a backend down) is answered in
// RESP, with an -ERR line per command it sends.
package redis

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"

	"github.com/leproxy/leproxy/dbproxy"
)

// Redis: TLS from the first byte (as Redis's own tls-port, redis-cli
// --tls, go-redis with TLSConfig), then RESP2 or RESP3 piped to the
// backend. AUTH, ACL users and HELLO pass through untouched: leproxy
// never reads a command's arguments. No ALPN: Redis, redis-cli and the
// usual clients neither offer nor expect one, and a listener that offered
// one would turn away a client offering something else.
//
// Errors leproxy sends, as RESP errors:
//
//	-ERR TLS is required on this port (leproxy)       plaintext on the TLS port
//	-ERR no route for server name x (leproxy)         unknown SNI (inside TLS)
//	-ERR could not connect to the backend of x (leproxy)
//
// A refused client gets the error in answer to each command it sends
// (up to refuseCommands), so that a client that treats the error to its
// first command (HELLO) as "old server" still reads it in answer to the
// command its user sent; the connection closes after a second without a
// command.
//
// The backend's replies go through a RESP-aware rewriter that maps Redis
// Cluster node addresses to leproxy's routes; see cluster.go. It costs a
// scan of reply headers (bulk data is copied, not inspected).

func init() {
	dbproxy.Register("redis", func() dbproxy.Protocol { return newProtocol() })
}

const (
	// refuseCommands bounds the commands a refused client is answered.
	refuseCommands = 16
	// maxRefuseRead bounds the bytes read from a refused client.
	maxRefuseRead = 64 << 10

	tlsRequired = "TLS is required on this port"
)

// protocol is the Redis Protocol. One value serves one Server and keeps
// its cluster node map, which RoutesChanged invalidates.
type protocol struct {
	tf    dbproxy.TLSFirst
	nodes nodeMap
}

var (
	_ dbproxy.Protocol      = (*protocol)(nil)
	_ dbproxy.RoutesWatcher = (*protocol)(nil)
)

func newProtocol() *protocol {
	p := &protocol{}
	p.tf = dbproxy.TLSFirst{
		Plaintext: func(ctx context.Context, conn net.Conn) string {
			first := refuse(ctx, conn, tlsRequired)
			if first == "" {
				return ""
			}
			return "redis command " + first
		},
		Refuse: func(ctx context.Context, conn net.Conn, _ dbproxy.RefusalKind, msg string) {
			refuse(ctx, conn, msg)
		},
	}
	return p
}

func (*protocol) Name() string   { return "redis" }
func (*protocol) ALPN() []string { return nil }

// RoutesChanged implements dbproxy.RoutesWatcher: after a reload, the
// next session builds the node map from the new routes.
func (p *protocol) RoutesChanged([]dbproxy.Route) { p.nodes.invalidate() }

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	c, b, err := p.tf.Handshake(ctx, client, s)
	if err != nil {
		return c, b, err
	}
	port := s.ListenerPort()
	if port == 0 {
		return c, b, nil
	}
	bhost, _, _ := net.SplitHostPort(s.Routed().Backend)
	w := &rewrite{
		nodes:       p.nodes.get(ctx, s.Routes),
		port:        strconv.Itoa(port),
		backendHost: bhost,
		logger:      s.Logger,
	}
	pair := new(respPairing)
	cmds := newRESPCommands(func(name, sub []byte) { pair.command(clusterCommand(name, sub)) })
	replies := &respReplies{pair: pair, errorLine: w.errorLine, cluster: w.cluster}
	return &clientConn{Conn: c, cmds: cmds, pair: pair},
		&backendConn{Conn: b, r: replies, buf: make([]byte, 32<<10)}, nil
}

// refuse answers each command the client sends, up to refuseCommands,
// with "-ERR msg (leproxy)", until it stops sending for a second (or the
// handshake deadline), and returns the first command's name.
func refuse(ctx context.Context, conn net.Conn, msg string) (first string) {
	reply := []byte("-ERR " + msg + " (leproxy)\r\n")
	n := 0
	cmds := newRESPCommands(func(name, _ []byte) {
		if n == 0 {
			first = dbproxy.PrintableWord(name, respCmdWord)
		}
		n++
	})
	buf := make([]byte, 4<<10)
	answered, read := 0, 0
	for answered < refuseCommands && read < maxRefuseRead && !cmds.lost {
		conn.SetReadDeadline(dbproxy.PeekDeadline(ctx))
		k, err := conn.Read(buf)
		read += k
		cmds.feed(buf[:k])
		for ; answered < min(n, refuseCommands); answered++ {
			if _, err := conn.Write(reply); err != nil {
				return first
			}
		}
		if err != nil {
			break
		}
	}
	if answered == 0 {
		// Nothing recognisable came: say it once anyway.
		conn.Write(reply)
	}
	return first
}

// clientConn is the client side of a Redis session: reads pass
// through unchanged and are scanned for the commands that replies are
// paired with.
type clientConn struct {
	net.Conn
	cmds *respCommands
	pair *respPairing
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.cmds.lost {
		c.cmds.feed(p[:n])
		if c.cmds.lost {
			c.pair.lose()
		}
	}
	return n, err
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *clientConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }

// backendConn is the backend side of a Redis session: reads come out
// of the reply rewriter. It hides the connection's WriteTo, and with it
// splice, which the client's TLS rules out anyway.
type backendConn struct {
	net.Conn
	r   *respReplies
	buf []byte
	off int   // of r.out already read
	err error // a permanent read error, returned once r.out is drained
}

func (c *backendConn) Read(p []byte) (int, error) {
	for {
		if c.off < len(c.r.out) {
			n := copy(p, c.r.out[c.off:])
			c.off += n
			if c.off == len(c.r.out) {
				c.r.out, c.off = c.r.out[:0], 0
			}
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		// Bulk data that is not held passes straight into p. Ending a
		// blob may end a reply, never a held one: nothing enters r.out.
		if c.r.lost || (c.r.st == repBulk && c.r.capKind == clusterNone) {
			max := len(p)
			if !c.r.lost {
				max = int(min(int64(max), c.r.bulkLeft))
			}
			n, err := c.Conn.Read(p[:max])
			if !c.r.lost && n > 0 {
				c.r.bulkLeft -= int64(n)
				if c.r.bulkLeft == 0 {
					c.r.st = repStart
					c.r.valueDone()
				}
			}
			if n > 0 || err == nil || c.transient(err) {
				return n, err
			}
			continue
		}
		n, err := c.Conn.Read(c.buf)
		c.r.feed(c.buf[:n])
		if err != nil && c.transient(err) && len(c.r.out) == c.off {
			return 0, err
		}
	}
}

// transient reports whether a read error leaves the stream usable (the
// pump's sampling deadline); any other ends it, passing on what the
// rewriter holds first.
func (c *backendConn) transient(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	c.r.flush()
	if c.err == nil {
		c.err = err
	}
	return false
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *backendConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }
