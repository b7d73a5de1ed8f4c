package dbproxy

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
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
// (up to redisRefuseCommands), so that a client that treats the error to
// its first command (HELLO) as "old server" still reads it in answer to
// the command its user sent; the connection closes after a second without
// a command.
//
// The backend's replies go through a RESP-aware rewriter that maps Redis
// Cluster node addresses to leproxy's routes; see rediscluster.go. It
// costs a scan of reply headers (bulk data is copied, not inspected).

func init() {
	Register("redis", func() Protocol { return newRedis() })
}

const (
	// redisRefuseCommands bounds the commands a refused client is
	// answered.
	redisRefuseCommands = 16
	// maxRedisRefuseRead bounds the bytes read from a refused client.
	maxRedisRefuseRead = 64 << 10

	redisTLSRequired = "TLS is required on this port"
)

// redis is the Redis Protocol. One value serves one Server and keeps its
// cluster node map.
type redis struct {
	tf    tlsFirst
	nodes redisNodes
}

var _ Protocol = (*redis)(nil)

func newRedis() *redis {
	p := &redis{}
	p.tf = tlsFirst{
		plaintext: func(ctx context.Context, conn net.Conn) string {
			first := refuseRedis(ctx, conn, redisTLSRequired)
			if first == "" {
				return ""
			}
			return "redis command " + first
		},
		refuse: func(ctx context.Context, conn net.Conn, _ refusalKind, msg string) {
			refuseRedis(ctx, conn, msg)
		},
	}
	return p
}

func (*redis) Name() string   { return "redis" }
func (*redis) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *redis) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	c, b, err := p.tf.handshake(ctx, client, s)
	if err != nil {
		return c, b, err
	}
	port := s.listenerPort()
	if port == 0 {
		return c, b, nil
	}
	bhost, _, _ := net.SplitHostPort(s.backend())
	w := &redisRewrite{
		nodes:       p.nodes.get(ctx, s),
		port:        strconv.Itoa(port),
		backendHost: bhost,
		logger:      s.Logger,
	}
	pair := new(respPairing)
	cmds := newRESPCommands(func(name, sub []byte) { pair.command(clusterCommand(name, sub)) })
	replies := &respReplies{pair: pair, errorLine: w.errorLine, cluster: w.cluster}
	return &respClientConn{Conn: c, cmds: cmds, pair: pair},
		&respBackendConn{Conn: b, r: replies, buf: make([]byte, 32<<10)}, nil
}

// refuseRedis answers each command the client sends, up to
// redisRefuseCommands, with "-ERR msg (leproxy)", until it stops sending
// for a second (or the handshake deadline), and returns the first
// command's name.
func refuseRedis(ctx context.Context, conn net.Conn, msg string) (first string) {
	reply := []byte("-ERR " + msg + " (leproxy)\r\n")
	n := 0
	cmds := newRESPCommands(func(name, _ []byte) {
		if n == 0 {
			first = printableWord(name, respCmdWord)
		}
		n++
	})
	buf := make([]byte, 4<<10)
	answered, read := 0, 0
	for answered < redisRefuseCommands && read < maxRedisRefuseRead && !cmds.lost {
		conn.SetReadDeadline(peekDeadline(ctx))
		k, err := conn.Read(buf)
		read += k
		cmds.feed(buf[:k])
		for ; answered < min(n, redisRefuseCommands); answered++ {
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

// respClientConn is the client side of a Redis session: reads pass
// through unchanged and are scanned for the commands that replies are
// paired with.
type respClientConn struct {
	net.Conn
	cmds *respCommands
	pair *respPairing
}

func (c *respClientConn) Read(p []byte) (int, error) {
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
func (c *respClientConn) CloseWrite() error { return closeWrite(c.Conn) }

// respBackendConn is the backend side of a Redis session: reads come out
// of the reply rewriter. It hides the connection's WriteTo, and with it
// splice, which the client's TLS rules out anyway.
type respBackendConn struct {
	net.Conn
	r   *respReplies
	buf []byte
	off int   // of r.out already read
	err error // a permanent read error, returned once r.out is drained
}

func (c *respBackendConn) Read(p []byte) (int, error) {
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
func (c *respBackendConn) transient(err error) bool {
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
func (c *respBackendConn) CloseWrite() error { return closeWrite(c.Conn) }
