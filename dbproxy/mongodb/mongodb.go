// Package mongodb is leproxy's MongoDB protocol ("mongodb", alias
// "mongo"): TLS from the first byte (mongodb://…/?tls=true). leproxy
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
package mongodb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("mongodb", func() dbproxy.Protocol { return new(protocol) }, "mongo")
}

// protocol is the MongoDB Protocol.
type protocol struct {
	// nextID numbers leproxy's own replies, as a server numbers its
	// messages.
	nextID atomic.Int32
}

var _ dbproxy.Protocol = (*protocol)(nil)

func (*protocol) Name() string   { return "mongodb" }
func (*protocol) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	var start [3]byte
	if _, err := io.ReadFull(client, start[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first bytes: %w", err)
	}
	// Three bytes, not one: a MongoDB message 790 bytes long (0x316)
	// starts 0x16 0x03 as a TLS handshake record does; the record
	// version's minor byte, never 0 but for SSL 3.0's, tells them apart.
	if !dbproxy.LooksLikeTLS(start) {
		return p.plaintext(ctx, client, s, start[:])
	}
	tc, herr := s.ServerHandshake(ctx, dbproxy.NewPrefixConn(client, start[:]))
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
		return nil, nil, p.answer(tc, nil, codeHostNotFound, msg, err)
	}
	b, err := s.DialBackend(ctx, r)
	if err != nil {
		return nil, nil, p.answer(tc, nil, codeHostUnreachable, "could not connect to the backend of "+r.Host, err)
	}
	return tc, b, nil
}

// plaintext handles a client whose first bytes, start, are not TLS: it
// goes to the default route if that allows plaintext, and is otherwise
// told that TLS is required.
func (p *protocol) plaintext(ctx context.Context, client net.Conn, s *dbproxy.Session, start []byte) (net.Conn, net.Conn, error) {
	r, err := s.Route("")
	if err != nil || !r.AllowPlaintext {
		msg := "TLS is required: connect with tls=true"
		if r != nil {
			msg = "TLS is required for " + r.Host + ": connect with tls=true"
		}
		return nil, nil, p.answer(client, start, codeUnauthorized, msg, errors.New("client did not start TLS"))
	}
	b, err := s.DialBackend(ctx, r)
	if err != nil {
		return nil, nil, p.answer(client, start, codeHostUnreachable, "could not connect to the backend of "+r.Host, err)
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
func (p *protocol) answer(conn net.Conn, start []byte, code int32, msg string, cause error) error {
	h, cmd, err := readFirstMessage(conn, start)
	if err != nil {
		return fmt.Errorf("%s: %w (and the client's first message: %w)", msg, cause, err)
	}
	reply := appendError(nil, h, p.nextID.Add(1), code, msg+" (leproxy)")
	if _, err := conn.Write(reply); err != nil {
		return fmt.Errorf("%s: %w (and answering %q: %w)", msg, cause, cmd, err)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		// close_notify: the driver reads a clean end after the reply.
		tc.CloseWrite()
	}
	return fmt.Errorf("%s: %w (answered %q)", msg, cause, cmd)
}
