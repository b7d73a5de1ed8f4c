package dbproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// TLS-first protocols (Redis, memcached, AMQP over 5671, MongoDB, the
// generic "tls") have no exchange before TLS: the client's first byte is
// the TLS ClientHello. They share TLSFirst and differ in how they tell a
// client, in its protocol, that it cannot be served.

// TLSRecordHandshake is the first byte of a TLS ClientHello: a handshake
// record's content type.
const TLSRecordHandshake = 0x16

// ErrNotTLS is the error of a session whose first byte was not a TLS
// handshake record on a TLS-first listener.
var ErrNotTLS = errors.New("not a TLS handshake")

// LooksLikeTLS reports whether b, a connection's first three bytes, start
// a TLS handshake record: content type 0x16 and a 3.x record version.
// Protocols whose own first message could start with 0x16 (MongoDB,
// HTTP) look at three bytes instead of one.
func LooksLikeTLS(b [3]byte) bool {
	return b[0] == TLSRecordHandshake && b[1] == 3 && b[2] != 0
}

// A RefusalKind says why a TLS-first client is refused after its TLS
// handshake.
type RefusalKind int

const (
	// RefuseNoRoute: the server name matches no route, or the client sent
	// none and there is no default.
	RefuseNoRoute RefusalKind = iota
	// RefuseBackend: the route's backend could not be reached or its TLS
	// handshake failed.
	RefuseBackend
)

// plaintextPeekTimeout bounds how long a plaintext client's first request
// is waited for, so that it can be named in the log, before the refusal is
// sent anyway.
const plaintextPeekTimeout = time.Second

// TLSFirst is the handshake of a TLS-first protocol; a Protocol's
// Handshake calls its Handshake. Its functions speak the protocol; both
// may be nil, and then the client is only closed.
type TLSFirst struct {
	// Plaintext tells a client whose first byte is not a TLS handshake
	// record that TLS is required, on conn, which replays that byte. It
	// may read the client's first request, bounded and under the deadline
	// conn has (PeekDeadline), and returns a short description of it for
	// the log ("" for none). The Server drains the client's input before
	// the close.
	Plaintext func(ctx context.Context, conn net.Conn) string
	// Refuse tells a client why it is refused: on the TLS connection
	// after the handshake, or on the plaintext connection of a client the
	// default route lets through in plaintext. It may read the client's
	// first request, bounded and under conn's deadline.
	Refuse func(ctx context.Context, conn net.Conn, kind RefusalKind, msg string)
}

// Handshake peeks at the client's first byte under the handshake
// deadline. A TLS handshake record starts TLS with s.TLSConfig, routes by
// the server name and dials the route's backend, over TLS when the route
// says so; the TLS connection and the backend are returned for the pump.
// Anything else is refused with tf.Plaintext, unless the default route
// allows plaintext clients: then the client, its first byte replayed, is
// piped to the default backend.
func (tf *TLSFirst) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(client, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first byte: %w", err)
	}
	raw := NewPrefixConn(client, first[:])
	if first[0] != TLSRecordHandshake {
		return tf.plaintextClient(ctx, raw, first[0], s)
	}
	tc, herr := s.ServerHandshake(ctx, raw)
	if herr != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", herr)
	}
	sni := tc.ConnectionState().ServerName
	r, err := s.Route(sni)
	if err != nil {
		tf.tell(ctx, tc, RefuseNoRoute, NoRouteMessage(sni))
		return nil, nil, err
	}
	b, err := s.DialBackend(ctx, r)
	if err != nil {
		tf.tell(ctx, tc, RefuseBackend, "could not connect to the backend of "+r.Host)
		return nil, nil, err
	}
	return tc, b, nil
}

// NoRouteMessage is what a client is told when its server name sni ("" for
// none) matches no route.
func NoRouteMessage(sni string) string {
	if sni == "" {
		return "no route for clients that send no server name (SNI)"
	}
	return "no route for server name " + sni
}

// plaintextClient serves a client whose first byte, first, is not a TLS
// handshake record; conn replays it.
func (tf *TLSFirst) plaintextClient(ctx context.Context, conn net.Conn, first byte, s *Session) (net.Conn, net.Conn, error) {
	r, err := s.Route("")
	if err == nil && r.AllowPlaintext {
		b, err := s.DialBackend(ctx, r)
		if err != nil {
			tf.tell(ctx, conn, RefuseBackend, "could not connect to the backend of "+r.Host)
			return nil, nil, err
		}
		return conn, b, nil
	}
	what := ""
	if tf.Plaintext != nil {
		// A short wait for the request, for the log; the client's
		// deadline still bounds the whole.
		conn.SetReadDeadline(PeekDeadline(ctx))
		what = tf.Plaintext(ctx, conn)
	}
	err = fmt.Errorf("%w (first byte %#02x)", ErrNotTLS, first)
	if what != "" {
		err = fmt.Errorf("%w (first byte %#02x, %s)", ErrNotTLS, first, what)
	}
	return nil, nil, err
}

// tell refuses a client with tf.Refuse and, on TLS, sends close_notify so
// that the client reads a clean end after the message. The Server drains
// and closes the connection underneath.
func (tf *TLSFirst) tell(ctx context.Context, conn net.Conn, kind RefusalKind, msg string) {
	if tf.Refuse != nil {
		tf.Refuse(ctx, conn, kind, msg)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

// PeekDeadline is the read deadline for waiting on a refused client's
// next request: a second from now, or ctx's deadline if that comes first.
func PeekDeadline(ctx context.Context) time.Time {
	t := time.Now().Add(plaintextPeekTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(t) {
		return d
	}
	return t
}

// PrintableWord returns the first word of b (up to a space, tab, CR or
// LF), at most max bytes, with anything but printable ASCII replaced by
// '?', for naming a client's request in a log line.
func PrintableWord(b []byte, max int) string {
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
