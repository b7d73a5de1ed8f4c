package dbproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// MongoDB: TLS from the first byte (mongodb://…/?tls=true). leproxy
// terminates TLS, picks the route by SNI, connects to the backend (over TLS
// when the route says so) and pipes the wire protocol untouched: OP_MSG,
// compression, authentication, exhaust cursors and change streams all pass
// through. The MongoDB drivers offer no ALPN protocol and leproxy offers
// none either.
//
// A client that leproxy cannot serve reads the reason as the answer to its
// first message (its hello, or legacy isMaster): an OP_MSG, or an OP_REPLY
// to an OP_QUERY, with {ok: 0, errmsg, code, codeName}, so that the driver
// reports it, and then the connection closes:
//
//	13 Unauthorized     plaintext on the TLS port ("TLS is required …"),
//	                    unless the default route allows plaintext
//	7  HostNotFound     no route for the client's server name, or no SNI
//	                    and no default route
//	6  HostUnreachable  the route's backend is down or its TLS failed
//
// Bytes that are neither TLS nor a MongoDB message are closed without a
// word.
//
// Topology: a driver that discovers a replica set (or a sharded cluster's
// mongos list) connects to the host names the servers report in their
// hello replies, not to the one it was given. leproxy passes those replies
// through untouched; see the README for the two set-ups that work
// (directConnection=true, or members named by their leproxy host names).

func init() {
	Register("mongodb", func() Protocol { return new(mongodb) })
}

// mongodb is the MongoDB Protocol.
type mongodb struct {
	// nextID numbers leproxy's own replies, as a server numbers its
	// messages.
	nextID atomic.Int32
}

var _ Protocol = (*mongodb)(nil)

func (*mongodb) Name() string   { return "mongodb" }
func (*mongodb) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *mongodb) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	var start [3]byte
	if _, err := io.ReadFull(client, start[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first bytes: %w", err)
	}
	if !firstBytesTLS(start) {
		return p.plaintext(ctx, client, s, start[:])
	}
	tc, herr := s.ServerHandshake(ctx, &prefixConn{Conn: client, prefix: start[:]})
	if herr != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", herr)
	}
	sni := tc.ConnectionState().ServerName
	r, err := s.Route(sni)
	if err != nil {
		msg := "no route for clients that send no server name (SNI)"
		if sni != "" {
			msg = fmt.Sprintf("no route for server name %q", sni)
		}
		return nil, nil, p.answer(tc, nil, mongoCodeHostNotFound, msg, err)
	}
	b, err := dialTLSFirstBackend(ctx, s, r)
	if err != nil {
		return nil, nil, p.answer(tc, nil, mongoCodeHostUnreachable, "could not connect to the backend of "+r.Host, err)
	}
	return tc, b, nil
}

// plaintext handles a client whose first bytes, start, are not TLS: it
// goes to the default route if that allows plaintext, and is otherwise
// told that TLS is required.
func (p *mongodb) plaintext(ctx context.Context, client net.Conn, s *Session, start []byte) (net.Conn, net.Conn, error) {
	r, err := s.Route("")
	if err != nil || !r.AllowPlaintext {
		msg := "TLS is required: connect with tls=true"
		if r != nil {
			msg = "TLS is required for " + r.Host + ": connect with tls=true"
		}
		return nil, nil, p.answer(client, start, mongoCodeUnauthorized, msg, errors.New("client did not start TLS"))
	}
	b, err := dialTLSFirstBackend(ctx, s, r)
	if err != nil {
		return nil, nil, p.answer(client, start, mongoCodeHostUnreachable, "could not connect to the backend of "+r.Host, err)
	}
	// Hand the bytes read so far to the backend, so that both sides are
	// plain connections the pump can splice.
	if _, err := b.Write(start); err != nil {
		return nil, nil, fmt.Errorf("writing to backend %s: %w", r.Backend, err)
	}
	return client, b, nil
}

// answer reads the client's first message, of which start was read
// already, answers it with error code and msg, and returns an error for
// the log: cause, with msg. A client whose first message is not MongoDB's
// gets no answer.
func (p *mongodb) answer(conn net.Conn, start []byte, code int32, msg string, cause error) error {
	h, cmd, err := readMongoFirstMessage(conn, start)
	if err != nil {
		return fmt.Errorf("%s: %w (and the client's first message: %w)", msg, cause, err)
	}
	reply := appendMongoError(nil, h, p.nextID.Add(1), code, msg+" (leproxy)")
	if _, err := conn.Write(reply); err != nil {
		return fmt.Errorf("%s: %w (and answering %q: %w)", msg, cause, cmd, err)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		// close_notify: the driver reads a clean end after the reply.
		tc.CloseWrite()
	}
	return fmt.Errorf("%s: %w (answered %q)", msg, cause, cmd)
}

// firstBytesTLS reports whether b, a connection's first three bytes,
// start a TLS handshake record: content type 22 and a record version 3.x
// other than SSL 3.0's. The minor version tells TLS from a MongoDB message
// 790 bytes long (0x316), whose length starts the same way.
func firstBytesTLS(b [3]byte) bool {
	return b[0] == tlsHandshakeRecord && b[1] == 3 && b[2] != 0
}
