package tlsproxy

import (
	"context"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// The "tls" protocol terminates TLS for anything that speaks TLS from its
// first byte and pipes the decrypted bytes, unmodified, to the route's
// backend (in plaintext, or re-encrypted with the route's tls mode). It
// knows no protocol inside, so it can tell a client nothing: a connection
// whose first byte is not a TLS handshake, a server name with no route and
// a backend that is down are closed, and the session's log line says why
// ("not a TLS handshake (first byte 0x47)", "no route for server name …",
// "dialing backend …").
//
// ALPN: none is offered. Go's TLS server cannot pass the client's ALPN
// list through to a backend it has not dialled yet, so a client that
// insists on an ALPN protocol (HTTP/2, PostgreSQL direct TLS) must use its
// own protocol's listener; a client that merely offers one connects with
// none negotiated.

func init() {
	dbproxy.Register("tls", func() dbproxy.Protocol { return &protocol{} })
}

// protocol is the protocol-agnostic TLS-first Protocol.
type protocol struct {
	tf dbproxy.TLSFirst
}

var _ dbproxy.Protocol = (*protocol)(nil)

func (*protocol) Name() string   { return "tls" }
func (*protocol) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	return p.tf.Handshake(ctx, client, s)
}
