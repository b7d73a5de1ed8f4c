package dbproxy

import (
	"context"
	"crypto/tls"
	"net"
)

// ServerHandshakeConfig is ServerHandshake with cfg, a config the Protocol
// derived from TLSConfig (a Clone with a lower MaxVersion, or other ALPN
// identifiers, for one kind of client), in place of the Server's own. The
// outcome is reported to Config.OnTLSHandshake, and a failure counted
// against the client, as ServerHandshake's are.
// MSSQL needs it: TDS 7.x carries the handshake inside its own packets,
// where TLS 1.3 hangs some clients, and only TDS 8.0 clients may use it.
func (s *Session) ServerHandshakeConfig(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(conn, cfg)
	err := tc.HandshakeContext(ctx)
	if f := s.srv.cfg.OnTLSHandshake; f != nil {
		f(err)
	}
	if err != nil {
		s.tlsFailed()
	}
	return tc, err
}
