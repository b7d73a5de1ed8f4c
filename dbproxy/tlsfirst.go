package dbproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// TLS-first protocols (Redis, memcached, AMQP over 5671, the generic
// "tls") have no exchange before TLS: the client's first byte is the TLS
// ClientHello. They share this handshake and differ in how they tell a
// client, in its protocol, that it cannot be served.

// errNotTLS is the error of a session whose first byte was not a TLS
// handshake record on a TLS-first listener.
var errNotTLS = errors.New("not a TLS handshake")

// refusalKind says why a TLS-first client is refused after its TLS
// handshake.
type refusalKind int

const (
	// refuseNoRoute: the server name matches no route, or the client sent
	// none and there is no default.
	refuseNoRoute refusalKind = iota
	// refuseBackend: the route's backend could not be reached or its TLS
	// handshake failed.
	refuseBackend
)

// plaintextPeekTimeout bounds how long a plaintext client's first request
// is waited for, so that it can be named in the log, before the refusal is
// sent anyway.
const plaintextPeekTimeout = time.Second

// tlsFirst is the handshake of a TLS-first protocol. Its functions speak
// the protocol; both may be nil, and then the client is only closed.
type tlsFirst struct {
	// plaintext tells a client whose first byte is not a TLS handshake
	// record that TLS is required, on conn, which replays that byte. It
	// may read the client's first request, bounded and under the deadline
	// conn has, and returns a short description of it for the log ("" for
	// none). The client's input is drained before the close.
	plaintext func(ctx context.Context, conn net.Conn) string
	// refuse tells a client why it is refused: on the TLS connection
	// after the handshake, or on the plaintext connection of a client the
	// default route lets through in plaintext. It may read the client's
	// first request, bounded and under conn's deadline.
	refuse func(ctx context.Context, conn net.Conn, kind refusalKind, msg string)
}

// handshake peeks at the client's first byte under the handshake
// deadline. A TLS handshake record starts TLS with s.TLSConfig, routes by
// the server name and dials the route's backend, over TLS when the route
// says so; the TLS connection and the backend are returned for the pump.
// Anything else is refused with tf.plaintext, unless the default route
// allows plaintext clients: then the client, its first byte replayed, is
// piped to the default backend.
func (tf *tlsFirst) handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(client, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first byte: %w", err)
	}
	raw := &prefixConn{Conn: client, prefix: first[:]}
	if first[0] != tlsHandshakeRecord {
		return tf.plaintextClient(ctx, raw, first[0], s)
	}
	tc, herr := s.ServerHandshake(ctx, raw)
	if herr != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", herr)
	}
	sni := tc.ConnectionState().ServerName
	r, err := s.Route(sni)
	if err != nil {
		msg := "no route for clients that send no server name (SNI)"
		if sni != "" {
			msg = "no route for server name " + sni
		}
		tf.tell(ctx, tc, refuseNoRoute, msg)
		return nil, nil, err
	}
	b, err := dialTLSFirstBackend(ctx, s, r)
	if err != nil {
		tf.tell(ctx, tc, refuseBackend, "could not connect to the backend of "+r.Host)
		return nil, nil, err
	}
	return tc, b, nil
}

// plaintextClient serves a client whose first byte, first, is not a TLS
// handshake record; conn replays it.
func (tf *tlsFirst) plaintextClient(ctx context.Context, conn net.Conn, first byte, s *Session) (net.Conn, net.Conn, error) {
	r, err := s.Route("")
	if err == nil && r.AllowPlaintext {
		b, err := dialTLSFirstBackend(ctx, s, r)
		if err != nil {
			tf.tell(ctx, conn, refuseBackend, "could not connect to the backend of "+r.Host)
			return nil, nil, err
		}
		return conn, b, nil
	}
	what := ""
	if tf.plaintext != nil {
		// A short wait for the request, for the log; the client's
		// deadline still bounds the whole.
		conn.SetReadDeadline(peekDeadline(ctx))
		what = tf.plaintext(ctx, conn)
	}
	err = fmt.Errorf("%w (first byte %#02x)", errNotTLS, first)
	if what != "" {
		err = fmt.Errorf("%w (first byte %#02x, %s)", errNotTLS, first, what)
	}
	return nil, nil, err
}

// tell refuses a client with tf.refuse and, on TLS, sends close_notify so
// that the client reads a clean end after the message. The Server drains
// and closes the connection underneath.
func (tf *tlsFirst) tell(ctx context.Context, conn net.Conn, kind refusalKind, msg string) {
	if tf.refuse != nil {
		tf.refuse(ctx, conn, kind, msg)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

// dialTLSFirstBackend connects to r's backend, in plaintext or with a TLS
// handshake from the first byte as the route says.
func dialTLSFirstBackend(ctx context.Context, s *Session, r *Route) (net.Conn, error) {
	b, err := s.Dial(ctx, r)
	if err != nil {
		return nil, err
	}
	cfg := s.BackendTLSConfig(r)
	if cfg == nil {
		return b, nil
	}
	tb := tls.Client(b, cfg)
	if err := tb.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with backend %s: %w", r.Backend, err)
	}
	return tb, nil
}

// peekDeadline is the read deadline for waiting on a refused client's
// next request: plaintextPeekTimeout from now, or ctx's deadline if that
// comes first.
func peekDeadline(ctx context.Context) time.Time {
	t := time.Now().Add(plaintextPeekTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(t) {
		return d
	}
	return t
}

// listenerPort is the port of the listener the session's client connected
// to, as the client sees it unless a port mapping sits in between; 0 when
// it cannot be told.
func (s *Session) listenerPort() int {
	switch a := s.client.LocalAddr().(type) {
	case *net.TCPAddr:
		return a.Port
	case nil:
		return 0
	default:
		_, p, err := net.SplitHostPort(a.String())
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(p)
		return n
	}
}

// printableWord returns the first word of b (up to a space, tab, CR or
// LF), at most max bytes, with anything but printable ASCII replaced by
// '?', for naming a client's request in a log line.
func printableWord(b []byte, max int) string {
	out := make([]byte, 0, min(len(b), max))
	for _, c := range b {
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' || len(out) == max {
			break
		}
		if c < 0x21 || c > 0x7e {
			c = '?'
		}
		out = append(out, c)
	}
	return string(out)
}
